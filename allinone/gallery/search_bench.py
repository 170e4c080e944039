"""python main.py bench --search N [--hard] [--metric euc|cos]: the bound index on N synthetic identities.

The gallery: N identities of OpenGait's shape [256, 16], clustered (2,000 centres, noise 0.6), float16 on disk
(memory-mapped). Queries: noisy views (noise 0.25) of random identities; with --hard also adversarial ones:
occluded (2 of 16 parts replaced by noise of 8 times the scale, or zeroed), scaled (the identity at 5x its length:
cos distance 0, L2 large; for euc the query is scaled too, so its distance is large), and near-duplicates (25
identities planted within noise 0.02 of one vector, the query among them). The threshold per query lies half way
between its 10th and 11th smallest exact distances, so ten identities are within it. Brute force (OpenGait's formula over every
identity) gives the truth; the table reports recall of within-threshold identities (must be 1.0), how many tracks
the bound let through, query time (median, p95) and the index's memory, with the index's build time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allinone.config import SearchConfig
from allinone.decide.distance import distance_matrix
from allinone.gallery.search import BoundIndex, default_lists

STEP = 50_000  # gallery rows written, scanned and indexed at a time


def _exact(q: np.ndarray, feats, metric: str, rows=None, chunk: int = 20_000) -> np.ndarray:
    """[len(q), n] (or over ``rows``, any order) OpenGait distances, the gallery read in chunks (float16 as stored;
    distance_matrix converts to float32)."""
    idx = np.arange(len(feats)) if rows is None else np.asarray(rows)
    out = np.empty((len(q), len(idx)), np.float32)
    for s in range(0, len(idx), chunk):
        part = idx[s:s + chunk]
        if rows is None:
            block = np.asarray(feats[part[0]:part[-1] + 1])
        else:
            order = np.argsort(part, kind="stable")
            block = np.empty((len(part),) + feats.shape[1:], feats.dtype)
            block[order] = feats[part[order]]  # read in file order, put back in the order asked
        out[:, s:s + len(part)] = distance_matrix(q, block, metric)
    return out


def benchmark(n: int, folder, queries: int = 100, clusters: int = 2000, seed: int = 0, hard: bool = False,
              metric: str = "euc", config: SearchConfig = SearchConfig(), shape: tuple[int, int] = (256, 16),
              within: int = 10) -> dict:
    """The report of the bound index against brute force on ``n`` synthetic identities written to ``folder``."""
    rng = np.random.default_rng(seed)
    c, p = shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    feats = _gallery(folder / "gallery_f16.npy", rng, n, shape, clusters)
    probes, kinds = _queries(feats, rng, queries, hard)
    feats.flush()

    t0 = time.perf_counter()
    exact = _exact(probes, feats, metric)
    brute_s = (time.perf_counter() - t0) / len(probes)
    ordered = np.sort(exact, axis=1)
    thresholds = (ordered[:, within - 1] + ordered[:, within]) / 2  # half way: rounding cannot move a track across
    ball = _l2_ball_fraction(probes, feats, thresholds) if metric == "euc" else None

    t0 = time.perf_counter()
    index = _build_index(feats, rng, metric, config, seed)
    build_s = time.perf_counter() - t0

    q = _run_queries(index, feats, probes, kinds, exact, thresholds, metric, config)
    return {"identities": n, "shape": [c, p], "metric": metric, "queries": len(probes),
            "query_kinds": {k: len(v) for k, v in q.by_kind.items()},
            "bound_dims": config.bound_dims, "shortlist": config.shortlist,
            "recall_within_threshold": float(np.mean(q.recall)),
            "recall_by_kind": {k: float(np.mean(v)) for k, v in q.by_kind.items()},
            "clusters": clusters, "lists": len(index.starts) - 1,
            "tracks_bounded": {"median_fraction": round(float(np.median(q.bounded)), 4),
                               "max_fraction": round(float(np.max(q.bounded)), 4)},
            "tracks_through_bound": {"median_fraction": round(float(np.median(q.through)), 5),
                                     "max_fraction": round(float(np.max(q.through)), 5)},
            "tracks_measured_exactly": {"median": int(np.median(q.measured)), "max": int(np.max(q.measured))},
            "l2_ball_p_times_t_median_fraction": ball,
            "build_s": round(build_s, 1), "index_bytes_per_identity": round(index.nbytes() / n, 1),
            "index_mb": round(index.nbytes() / 2 ** 20, 1), "features_bytes_per_identity": c * p * 2,
            "query_ms": {"median": round(1000 * float(np.median(q.lat)), 2),
                         "p95": round(1000 * float(np.percentile(q.lat, 95)), 2)},
            "query_ms_median_by_kind": {k: round(float(np.median(v)), 1) for k, v in q.ms_by_kind.items()},
            "bound_ms": {"median": round(1000 * float(np.median(q.lat_bound)), 2),
                         "p95": round(1000 * float(np.percentile(q.lat_bound, 95)), 2)},
            "brute_force_ms_per_query": round(1000 * brute_s, 1)}


def _gallery(path: Path, rng: np.random.Generator, n: int, shape: tuple[int, int], clusters: int) -> np.memmap:
    """``n`` identities around ``clusters`` random centres, float16 in a memory-mapped .npy file."""
    c, p = shape
    feats = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, c, p))
    centers = rng.normal(0, 1.0, (clusters, c, p)).astype(np.float32)
    for s in range(0, n, STEP):
        k = min(STEP, n - s)
        feats[s:s + k] = (centers[rng.integers(0, clusters, k)]
                          + rng.normal(0, 0.6, (k, c, p)).astype(np.float32)).astype(np.float16)
    return feats


def _queries(feats: np.memmap, rng: np.random.Generator, queries: int, hard: bool) -> tuple[np.ndarray, list[str]]:
    """The probes [q, c, p] and their kinds: noisy views of random identities, with ``hard`` the hard ones too."""
    n, c, p = feats.shape
    kinds = ["noisy"] * queries
    picked = rng.choice(n, queries, replace=False)
    probes = np.asarray(feats[picked], np.float32) + rng.normal(0, 0.25, (queries, c, p)).astype(np.float32)
    if hard:
        extra, extra_kinds = _hard_queries(feats, rng, queries)
        probes = np.concatenate([probes, np.stack(extra)])
        kinds += extra_kinds
    return probes, kinds


def _hard_queries(feats: np.memmap, rng: np.random.Generator, queries: int) -> tuple[list[np.ndarray], list[str]]:
    """Occluded and scaled queries, and one near-duplicate query: its 25 near-duplicates are planted in ``feats``."""
    n, c, p = feats.shape
    extra, extra_kinds = [], []
    for j in range(max(1, queries // 4)):
        t = int(rng.integers(0, n))
        q = np.asarray(feats[t], np.float32).copy()
        parts = rng.choice(p, 2, replace=False)
        q[:, parts] = 0.0 if j % 2 else 8 * rng.normal(size=(c, 2)).astype(np.float32)
        extra.append(q), extra_kinds.append("occluded")
        t = int(rng.integers(0, n))
        extra.append(5 * np.asarray(feats[t], np.float32)), extra_kinds.append("scaled")
    base = rng.normal(size=(c, p)).astype(np.float32)
    dup = rng.choice(n, 25, replace=False)
    for r in sorted(dup):
        feats[r] = (base + 0.02 * rng.normal(size=(c, p))).astype(np.float16)
    extra.append(base + 0.02 * rng.normal(size=(c, p)).astype(np.float32)), extra_kinds.append("near_duplicate")
    return extra, extra_kinds


def _l2_ball_fraction(probes: np.ndarray, feats: np.memmap, thresholds: np.ndarray) -> float:
    """Median share of the gallery an L2 range search of radius p * t (sound, the flattened vectors) lets through."""
    n, c, p = feats.shape
    inside = np.zeros(len(probes))
    flat_q = probes.reshape(len(probes), -1).astype(np.float64)
    for s in range(0, n, STEP):
        g = np.asarray(feats[s:s + STEP], np.float32).reshape(-1, c * p).astype(np.float64)
        sq = (flat_q ** 2).sum(1)[:, None] + (g ** 2).sum(1)[None] - 2 * flat_q @ g.T
        inside += (sq <= (p * thresholds[:, None]) ** 2).sum(1)
    return round(float(np.median(inside / n)), 4)


def _build_index(feats: np.memmap, rng: np.random.Generator, metric: str, config: SearchConfig,
                 seed: int) -> BoundIndex:
    """The bound index over ``feats``, its sample of identities drawn from ``rng``."""
    n = len(feats)
    sample = np.asarray(feats[np.sort(rng.choice(n, min(n, config.sample), replace=False))], np.float32)

    def chunks():
        for s in range(0, n, STEP):
            ids = np.arange(s, min(n, s + STEP))
            yield ids, ids, np.full(len(ids), 30), np.asarray(feats[s:s + STEP], np.float32)
    lists = config.lists or default_lists(n, len(sample))
    return BoundIndex.build(metric, sample, chunks, config.bound_dims, {}, lists=lists, seed=seed)


@dataclass
class _QueryStats:
    """Per query: seconds (bound and exact stage; bound alone), recall, shares of the gallery through the bound and
    bounded, tracks measured exactly; recall and milliseconds by query kind."""
    lat: list[float] = field(default_factory=list)
    lat_bound: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    through: list[float] = field(default_factory=list)
    bounded: list[float] = field(default_factory=list)
    measured: list[int] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    ms_by_kind: dict[str, list[float]] = field(default_factory=dict)


def _run_queries(index: BoundIndex, feats: np.memmap, probes: np.ndarray, kinds: list[str], exact: np.ndarray,
                 thresholds: np.ndarray, metric: str, config: SearchConfig) -> _QueryStats:
    """Each probe through the index, one at a time as a search runs it, scored against the brute force."""
    n = len(feats)
    out = _QueryStats()
    for i in range(len(probes)):
        t1 = time.perf_counter()
        (h,) = index.query(probes[i:i + 1], float(thresholds[i]), config.shortlist)
        out.lat_bound.append(time.perf_counter() - t1)
        rows = index.track_ids[np.unique(np.concatenate([h.within, h.nearest]))]
        _exact(probes[i:i + 1], feats, metric, rows)  # the exact stage, timed as a search would run it
        # recall: of the tracks the brute force puts within the threshold, the share the index measured exactly
        # (a separate float32 computation of one distance can differ from the batched one in its last digits, so
        # it is not compared with the threshold again here; the decision uses the measured distance)
        found = set(index.track_ids[h.within].tolist())
        out.lat.append(time.perf_counter() - t1)
        truth = set(np.flatnonzero(exact[i] <= thresholds[i]).tolist())
        r = len(truth & found) / len(truth) if truth else 1.0
        out.recall.append(r)
        out.by_kind.setdefault(kinds[i], []).append(r)
        out.ms_by_kind.setdefault(kinds[i], []).append(1000 * out.lat[-1])
        out.through.append(len(h.within) / n)
        out.bounded.append(h.looked_at / n)
        out.measured.append(len(rows))
    return out
