"""Impostor pairs a run can see: tracks of one video seen in the same frames (two people, unless their boxes
coincide), and tracks of different gallery identities.

Seen together: two tracks of one video, each with ``min_frames`` silhouettes, in at least ``min_overlap`` common
frames. A pair whose boxes overlap with IoU > 0.5 in more than half of those frames is one person tracked twice (a
near-duplicate), not an impostor pair, and is left out. CoVisibility counts both numbers per frame as a video
plays, so nothing per frame is kept.

Gallery pairs: every pair of member tracks of two different identities (at most ``GALLERY_CAP`` members are used,
the first in gallery order, so a large enrolled gallery stays cheap), except near-duplicates seen together.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allinone.records import Embedding, Identity

DUPLICATE_IOU = 0.5
GALLERY_CAP = 1000


class CoVisibility:
    """Per pair of track ids of one video: frames seen together, and frames with box IoU > DUPLICATE_IOU."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[int, int], list[int]] = {}

    def add(self, xyxy: np.ndarray, track_id: np.ndarray) -> None:
        """One frame's tracked boxes [k, 4] (xyxy) and their track ids [k]."""
        k = len(track_id)
        if k < 2:
            return
        b = np.asarray(xyxy, np.float64).reshape(k, 4)
        x1 = np.maximum(b[:, None, 0], b[None, :, 0])
        y1 = np.maximum(b[:, None, 1], b[None, :, 1])
        x2 = np.minimum(b[:, None, 2], b[None, :, 2])
        y2 = np.minimum(b[:, None, 3], b[None, :, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
        iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-12)
        ids = [int(t) for t in track_id]
        dup = (iou > DUPLICATE_IOU).tolist()
        for i in range(k):
            for j in range(i + 1, k):
                key = (ids[i], ids[j]) if ids[i] < ids[j] else (ids[j], ids[i])
                c = self.pairs.get(key)
                if c is None:
                    c = self.pairs[key] = [0, 0]
                c[0] += 1
                c[1] += dup[i][j]

    def rows(self, video: str) -> list[list]:
        """[video, a, b, frames together, duplicate frames] per pair (run.json keeps them for rematch)."""
        return [[video, a, b, c[0], c[1]] for (a, b), c in sorted(self.pairs.items())]


@dataclass
class RunPairs:
    """Impostor pairs found in a run, as distances and the track keys of each pair: (RUN, video, track id) for a
    track of one of the run's videos (names unique within a run), (STORED, video, track id) for a gallery file's
    track, so a probe video that carries a gallery file's video name never shares a key with its tracks."""

    distances: np.ndarray
    keys: list[tuple[tuple[str, str, int], tuple[str, str, int]]]
    seen_together: int
    gallery: int
    duplicates: int
    identity_of: dict[tuple[str, str, int], int]  # a gallery member's key → its identity's index


RUN, STORED = "run", "stored"


def is_duplicate(shared: int, dup: int) -> bool:
    return dup * 2 > shared


def _member_key(m: Embedding, run: dict) -> tuple[str, str, int]:
    """A gallery member's key: the run's own track when the run has it (a gallery video's), else a stored one."""
    own = run.get((RUN, m.video, m.track_id))
    same = own is not None and (own is m or np.array_equal(own.feature, m.feature))
    return (RUN if same else STORED, m.video, m.track_id)


def run_pairs(embeddings: list[Embedding], together: list[list], identities: list[Identity], metric: str,
              min_overlap: int, min_frames: int) -> RunPairs:
    """The run's impostor pairs (module doc). ``embeddings``: the tracks of the run's videos; ``together``:
    CoVisibility rows of every video."""
    from allinone.decide.distance import distance_matrix

    by_key = {(RUN, e.video, e.track_id): e for e in embeddings if e.n_frames >= min_frames}
    dup_keys = set()
    pairs: dict[tuple, None] = {}
    duplicates = 0
    for video, a, b, shared, dup in together:
        ka, kb = (RUN, video, int(a)), (RUN, video, int(b))
        if int(shared) < min_overlap:
            continue
        if is_duplicate(int(shared), int(dup)):
            dup_keys.add((ka, kb))
            duplicates += 1
            continue
        if ka in by_key and kb in by_key:
            pairs[(ka, kb)] = None
    n_seen = len(pairs)
    members: list[tuple[int, tuple, Embedding]] = []
    run = dict(by_key)
    identity_of: dict[tuple[str, str, int], int] = {}
    for i, ident in enumerate(identities):
        for m in ident.members:
            key = _member_key(m, run)
            identity_of[key] = i
            if m.n_frames >= min_frames and len(members) < GALLERY_CAP:
                members.append((i, key, m))
    for _, k, m in members:  # each key with its own track's feature, whatever order a pair's keys sort in
        by_key.setdefault(k, m)
    n_gallery = 0
    for x in range(len(members)):
        for y in range(x + 1, len(members)):
            (i, ka, _), (j, kb, _) = members[x], members[y]
            if i == j or ka == kb:
                continue
            ka, kb = sorted([ka, kb])
            if (ka, kb) in dup_keys or (ka, kb) in pairs:
                continue
            pairs[(ka, kb)] = None
            n_gallery += 1
    keys = list(pairs)
    if not keys:
        return RunPairs(np.zeros(0), [], 0, 0, duplicates, identity_of)
    rows: dict[tuple, list[int]] = {}
    for i, (a, _) in enumerate(keys):
        rows.setdefault(a, []).append(i)
    d = np.zeros(len(keys))
    for a, idx in rows.items():  # one row of distances per first track: memory stays one row wide
        other = np.stack([by_key[keys[i][1]].feature for i in idx])
        d[idx] = distance_matrix(by_key[a].feature[None], other, metric)[0]
    return RunPairs(d, keys, n_seen, n_gallery, duplicates, identity_of)


__all__ = ["CoVisibility", "DUPLICATE_IOU", "GALLERY_CAP", "RUN", "RunPairs", "STORED", "is_duplicate", "run_pairs"]
