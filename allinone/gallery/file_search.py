"""Searching a large gallery file (more than SearchConfig.exact_limit tracks) through its bound index.

The index (gallery/search.py) is kept beside the file, ``<file>.<metric>.index.npz``, and built again when it is
missing or stale: its stamp is the file's uuid and generation (bumped by every enrol and remove) and the index
settings, written inside the same file, which goes to a unique temporary name and is moved into place (os.replace),
so concurrent builds never share a file and a reader never sees an index without its stamp or the reverse. It is
built from one read snapshot of the file and trained on a seeded random sample of its tracks.

A search measures exactly every track whose bound is within the threshold (in chunks, so memory stays bounded
however many the bound lets through) and each probe's ``shortlist`` tracks of smallest bound; it returns the owners
of the tracks within the threshold (all of them, by construction) and of each probe's ``shortlist`` nearest measured
tracks (the ranking beyond the threshold: approximate), each with all its tracks.
"""
from __future__ import annotations

import logging

import numpy as np

from allinone.decide.distance import distance_matrix
from allinone.gallery.search import BoundIndex, default_lists
from allinone.records import Embedding, Identity

log = logging.getLogger(__name__)


def search_index(store, config, metric: str) -> BoundIndex:
    """The store's bound index for ``metric`` (module doc). The store object holds the index it last returned: while
    the file's generation and the settings are the same, that one is returned without reading anything more (a live
    stream asks at every decision; an index of a million tracks takes seconds to read)."""
    settings = (config.bound_dims, config.sample, config.seed, config.lists)
    held = store.held_indexes.get(metric)
    if held is not None and held[0] == (store.generation(), settings):
        return held[1]
    path = store.path.with_name(f"{store.path.name}.{metric}.index.npz")
    with store.snapshot():
        generation = store.generation()
        n = store.count_tracks()
        stamp = {"uuid": store.meta().get("uuid", ""), "generation": generation,
                 "tracks": n, "dims": config.bound_dims, "sample": config.sample,
                 "seed": config.seed, "lists": config.lists or default_lists(n, min(n, config.sample))}
        want = {k: str(v) for k, v in stamp.items()}
        found = BoundIndex.load(path) if path.is_file() else None
        if found is not None and found.metric == metric and found.stamp == want:
            store.held_indexes[metric] = ((generation, settings), found)
            return found
        log.info("%s: building the search index over %d tracks", store.path, stamp["tracks"])
        sample = np.stack([r[3] for r in store.tracks_of(store.sample_ids(config.sample, config.seed)).values()])
        index = BoundIndex.build(metric, sample, store.rows, config.bound_dims, want, lists=int(stamp["lists"]),
                                 seed=config.seed)
    try:
        index.save(path)
    except OSError as exc:  # a read-only folder: the index serves this run only
        log.warning("%s: cannot keep the search index beside the gallery file (%s); it is built anew each run",
                    path, exc.strerror or exc)
    store.held_indexes[metric] = ((generation, settings), index)
    return index


def _chunk_of(store, track_ids: list[int]):
    rows = store.tracks_of(track_ids)
    tids = sorted(rows)
    owners = store.owners(tids)
    return (np.array(tids, np.int64), np.array([owners[t] for t in tids], np.int64),
            np.array([rows[t][0] for t in tids], np.int64), np.stack([rows[t][3] for t in tids]))


def candidates(store, probes: list[Embedding], config, metric: str, threshold: float,
               min_frames: int = 0) -> tuple[list[Identity], dict]:
    """(identities, run.json ``search``) for these probes (module doc)."""
    n = store.count_tracks()
    base = {"mode": "index", "tracks": n, "metric": metric, "threshold": float(threshold),
            "within_threshold": "exact: every identity with a track within the threshold is compared",
            "beyond_threshold": "approximate: the identities of the shortlist tracks of smallest lower bound",
            "shortlist": config.shortlist, "bound_dims": config.bound_dims}
    if not probes:
        return [], {**base, "probes": 0, "identities_compared": 0}
    index = store.search_index(config, metric)
    q = np.stack([p.feature for p in probes]).astype(np.float32)
    hits = index.query(q, threshold, config.shortlist, min_frames)
    rows = np.unique(np.concatenate([np.concatenate([h.within, h.nearest]) for h in hits])).astype(np.int64)
    wanted = set(index.track_ids[rows].tolist())
    chunks = store.rows() if len(rows) > len(index) // 4 else \
        (_chunk_of(store, index.track_ids[rows[s:s + 2000]].tolist()) for s in range(0, len(rows), 2000))
    keep: set[int] = set()
    k = max(1, config.shortlist)
    best_d = np.full((len(q), 0), np.inf, np.float32)
    best_o = np.zeros((len(q), 0), np.int64)
    for tid, iid, nf, feats in chunks:
        sel = np.array([t in wanted and f >= min_frames for t, f in zip(tid.tolist(), nf.tolist())], bool)
        if not sel.any():
            continue
        d = distance_matrix(q, feats[sel], metric)
        owners = iid[sel]
        keep.update(owners[(d <= threshold).any(0)].tolist())
        best_d = np.concatenate([best_d, d], 1)
        best_o = np.concatenate([best_o, np.broadcast_to(owners, d.shape)], 1)
        if best_d.shape[1] > k:
            top = np.argpartition(best_d, k - 1, axis=1)[:, :k]
            best_d, best_o = np.take_along_axis(best_d, top, 1), np.take_along_axis(best_o, top, 1)
    if config.shortlist > 0:
        keep.update(best_o.reshape(-1).tolist())
    nearest = best_d.min(1) if best_d.shape[1] else np.full(len(q), np.inf)
    exact = int(sum(float(nearest[i]) <= h.rest_bound for i, h in enumerate(hits)))
    found = store.identities_by_id(sorted(keep))
    return found, {**base, "lists": len(index.starts) - 1,
                   "tracks_bounded": int(sum(h.looked_at for h in hits)),
                   "probes": len(probes), "identities_compared": len(found),
                   "tracks_measured": int(len(rows)), "nearest_exact": f"{exact} of {len(probes)} probes"}
