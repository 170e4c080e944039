"""Impostor evidence: every pair is two different tracks, each measured with its own feature."""
from __future__ import annotations

import numpy as np
import pytest

from allinone.decide.impostors import run_pairs
from allinone.records import Embedding, Identity

STORED_VIDEO = "gallery"  # the video name a gallery file's tracks carry (allinone.gallery.store.GALLERY_VIDEO)


def emb(video: str, track: int, seed: int) -> Embedding:
    feature = np.random.default_rng(seed).normal(size=(8, 4)).astype(np.float32)
    return Embedding(video, track, feature, 30, 0, 99)


def true_distance(a: Embedding, b: Embedding) -> float:
    """Part-averaged euclidean in float64, from the two features themselves."""
    return float(np.mean(np.linalg.norm(a.feature.astype(np.float64) - b.feature.astype(np.float64), axis=0)))


def check_every_pair(rp, tracks: dict) -> None:
    for (ka, kb), d in zip(rp.keys, rp.distances):
        assert ka != kb, f"{ka} paired with itself"
        assert d == pytest.approx(true_distance(tracks[ka], tracks[kb]), rel=1e-5), (ka, kb)


def test_a_multi_track_identity_of_a_gallery_file_pairs_each_track_with_its_own_feature():
    # the README's workflow: Ann enrolled twice (tracks 6 and 7 of the file), Bob and Cy in between (1, 2); a pair's
    # keys sort with Bob's track first: a pair must not store Ann's feature under Bob's key (track 6 against itself)
    ann6, ann7, bob, cy = emb(STORED_VIDEO, 6, 1), emb(STORED_VIDEO, 7, 2), emb(STORED_VIDEO, 1, 3), \
        emb(STORED_VIDEO, 2, 4)
    idents = [Identity("Ann", (ann6, ann7)), Identity("Bob", (bob,)), Identity("Cy", (cy,))]
    rp = run_pairs([], [], idents, "euc", min_overlap=5, min_frames=10)
    tracks = {("stored", STORED_VIDEO, e.track_id): e for e in (ann6, ann7, bob, cy)}
    # every pair of tracks of two different people, and no other: 6-1, 6-2, 7-1, 7-2, 1-2
    assert sorted((a[2], b[2]) for a, b in rp.keys) == [(1, 2), (1, 6), (1, 7), (2, 6), (2, 7)]
    check_every_pair(rp, tracks)
    assert rp.distances.min() > 0.5  # random features: no pair of one track with itself (distance 0)


def test_a_probe_video_named_like_the_gallery_files_video_keeps_its_own_evidence():
    # a probe "gallery.mp4" has the video name the gallery file's tracks carry, and track ids 1 and 2 as they do
    p1, p2 = emb(STORED_VIDEO, 1, 10), emb(STORED_VIDEO, 2, 11)
    s1, s2 = emb(STORED_VIDEO, 1, 20), emb(STORED_VIDEO, 2, 21)
    idents = [Identity("Ann", (s1,)), Identity("Bob", (s2,))]
    rp = run_pairs([p1, p2], [[STORED_VIDEO, 1, 2, 40, 0]], idents, "euc", min_overlap=5, min_frames=10)
    tracks = {("run", STORED_VIDEO, 1): p1, ("run", STORED_VIDEO, 2): p2,
              ("stored", STORED_VIDEO, 1): s1, ("stored", STORED_VIDEO, 2): s2}
    assert (rp.seen_together, rp.gallery) == (1, 1) and len(rp.keys) == 2
    check_every_pair(rp, tracks)
