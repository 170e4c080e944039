"""Threshold sources: the user's (checked), auto from people seen together, the metric's default; gallery names."""
from __future__ import annotations

import argparse
import logging
import math

import numpy as np
import pytest

from allinone.errors import UserError
from allinone.decide.identities import check_named, gallery_identities, parse_identity
from allinone.records import Embedding
from allinone.decide.threshold import DEFAULT_COS, check_threshold, impostor_pairs, resolve_threshold, threshold_at_far


def emb(video, track, pos, span=(0, 99), n_frames=30, channels=4):
    f = np.zeros((channels, 2), np.float32)
    f[0] = pos
    return Embedding(video, track, f, n_frames, *span)


@pytest.mark.parametrize("value, metric", [(math.nan, "euc"), (math.inf, "euc"), (-1.0, "euc"), (2.5, "cos"),
                                           (-0.1, "cos")])
def test_bad_thresholds_are_refused(value, metric):
    with pytest.raises(UserError) as err:
        check_threshold(value, metric)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value, metric", [(0.0, "euc"), (1e9, "euc"), (2.0, "cos"), (0.0, "cos")])
def test_good_thresholds_pass(value, metric):
    check_threshold(value, metric)


def test_threshold_at_far_hand_cases():
    d = np.arange(1, 11, dtype=float)[::-1]  # 10 impostor distances 1..10, unsorted
    assert threshold_at_far(d, 0.1) == 1.0  # k = 1 → d_1
    assert threshold_at_far(d, 0.25) == 2.0  # k = floor(2.5) = 2 → d_2
    below = threshold_at_far(d, 0.01)  # k = 0: no impostor accepted
    assert below < 1.0 and below == np.nextafter(1.0, 0)
    assert threshold_at_far(np.arange(1000.0) + 1, 0.001) == 1.0  # k = 1 exactly at the grid edge
    assert threshold_at_far(np.arange(999.0) + 1, 0.001) < 1.0  # k = floor(0.999) = 0
    assert threshold_at_far([0.0, 3.0], 0.01) == 0.0


def test_impostor_pairs_are_tracks_seen_together():
    e = [emb("v", 1, 0, (0, 50)), emb("v", 2, 1, (46, 80)), emb("v", 3, 2, (47, 90)), emb("w", 4, 3, (0, 99)),
         emb("v", 5, 4, (0, 99), n_frames=3)]
    # 1-2 share frames 46..50 (5), 1-3 share 47..50 (4), 2-3 share 47..80; other video and short track left out
    assert impostor_pairs(e, min_overlap=5, min_frames=10) == [(0, 1), (1, 2)]
    assert impostor_pairs(e, min_overlap=4, min_frames=10) == [(0, 1), (0, 2), (1, 2)]


def test_resolve_user_auto_and_default(caplog):
    e = [emb("g", 1, 0.0), emb("g", 2, 3.0), emb("p", 1, 10.0, (0, 10)), emb("p", 2, 14.0, (20, 30))]
    t = resolve_threshold(7.5, "euc", e, e[:2], far=0.01, min_overlap=5, min_frames=10)
    assert (t.value, t.basis) == (7.5, "user")
    with caplog.at_level(logging.WARNING):
        t = resolve_threshold(None, "euc", e, e[:2], far=0.01, min_overlap=5, min_frames=10)
    # one impostor pair (g1, g2) at distance 3: k = 0, so just below 3; the warning says it rests on 1 pair
    assert t.basis == "auto" and t.value == np.nextafter(np.float32(3.0), 0) or t.value < 3.0
    assert t.value > 2.999 and t.detail["impostor_pairs"] == 1
    assert "1 impostor pair" in caplog.text
    caplog.clear()
    lone = [emb("g", 1, 0.0), emb("p", 1, 10.0)]
    lone[0].feature[:, :] = 0
    lone[0].feature[1, :] = 4.0  # per-part norm 4 in both parts
    with caplog.at_level(logging.WARNING):
        t = resolve_threshold(None, "euc", lone, lone[:1], far=0.01, min_overlap=5, min_frames=10)
    assert t.basis == "default" and t.value == pytest.approx(4.0 * 2 * math.sin(math.radians(22.5)))
    assert "nothing supports a threshold" in caplog.text
    t = resolve_threshold(None, "cos", lone, lone[:1], far=0.01, min_overlap=5, min_frames=10)
    assert (t.value, t.basis) == (DEFAULT_COS, "default")
    assert t.to_json()["basis"] == "default" and math.isfinite(t.to_json()["value"])


def test_parse_identity():
    assert parse_identity("Ann=3") == ("Ann", (3,))
    assert parse_identity("Bob Smith=1,4") == ("Bob Smith", (1, 4))
    for bad in ("Ann", "=3", "Ann=", "Ann=x", "Ann=0", "A,b=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_identity(bad)


def test_gallery_identities_default_and_named(caplog):
    g = [emb("g", 1, 0), emb("g", 2, 1), emb("g", 5, 2)]
    ids = gallery_identities(g)
    assert [(i.name, i.key, [m.track_id for m in i.members]) for i in ids] == [("G1", 1, [1]), ("G2", 2, [2]),
                                                                               ("G5", 5, [5])]
    ids = gallery_identities(g, (("Ann", (5, 1)),))
    assert [(i.name, i.key, [m.track_id for m in i.members]) for i in ids] == [("Ann", 1, [5, 1]), ("G2", 2, [2])]
    with caplog.at_level(logging.WARNING):
        ids = gallery_identities(g, (("Ann", (1, 9)),))
    assert "9" in caplog.text and [i.name for i in ids] == ["Ann", "G2", "G5"]
    with pytest.raises(UserError):
        gallery_identities(g, (("Ann", (1, 9)),), strict=True)
    with pytest.raises(UserError, match="G2"):
        gallery_identities(g, (("G2", (1,)),))  # would collide with track 2's default name
    with pytest.raises(UserError):
        check_named((("Ann", (1,)), ("Ann", (2,))))
    with pytest.raises(UserError):
        check_named((("Ann", (1,)), ("Bob", (1,))))
