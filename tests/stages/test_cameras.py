"""The matches cameras share (stages/cameras.py), by hand: wall spans, open tracks, overlapping cameras."""
from __future__ import annotations

from allinone.stages.cameras import CrossCameras


def test_an_open_match_blocks_its_identity_on_other_cameras_until_it_closes():
    cross = CrossCameras()
    cross.update("a", {1: ("Ann", 10.0)})  # the track still in view
    assert cross.blocked("b", 12.0, 13.0) == {"Ann"}  # later on b: Ann is still on a
    assert cross.blocked("b", 5.0, 9.0) == set()  # before a's track began
    assert cross.blocked("a", 12.0, 13.0) == set()  # a camera's own tracks are its own rule's business
    cross.close("a", 1, "Ann", 10.0, 14.0)
    assert cross.held == {}
    assert cross.blocked("b", 13.5, 20.0) == {"Ann"} and cross.blocked("b", 14.5, 20.0) == set()


def test_a_track_that_lost_its_match_or_left_releases_the_identity():
    cross = CrossCameras()
    cross.update("a", {1: ("Ann", 10.0), 2: ("Bob", 10.0)})
    cross.update("a", {1: (None, 10.0)})  # track 1 now unknown, track 2 gone from view (not closed yet)
    assert cross.blocked("b", 12.0, 13.0) == set()
    cross.close("a", 3, None, 1.0, 2.0)  # an unknown track's close blocks nothing
    assert cross.closed == []


def test_overlapping_cameras_may_hold_one_identity_at_once():
    cross = CrossCameras(overlaps=frozenset({("a", "b")}))
    cross.update("a", {1: ("Ann", 10.0)})
    assert cross.blocked("b", 10.5, 12.0) == set() and cross.blocked("c", 10.5, 12.0) == {"Ann"}
