"""Gallery search for large galleries: a FAISS index gives a shortlist, OpenGait's exact distance decides.

OpenGait's distance (the mean over parts of per-part euclidean distances) is not the plain L2 distance a vector index
computes, so the index only proposes candidates: the `shortlist` nearest gallery tracks by L2 over the flattened
feature (the part-averaged distance is at most L2 / sqrt(parts), so near in one is near in the other), and every
candidate identity is then measured exactly over all its tracks. Small galleries (up to `exact_limit` tracks) are
searched exactly, without an index.

Index layout by gallery size n (tracks): under 100,000, "IVF{n/40},Flat"; from 100,000, "PCAR256,IVF1024,PQ32" (a
PCA to 256 dimensions, then 32 bytes a track; the exact features stay in the gallery file).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from allinone.config import SearchConfig

log = logging.getLogger(__name__)

PCA_DIM = 256


def index_factory(n: int, dim: int) -> str:
    """Below 100,000 tracks an inverted file over the full features (cheap to train); above, a PCA to 256
    dimensions and product quantisation, 32 bytes a track."""
    if n < 100_000:
        return f"IVF{max(1, min(4096, n // 40))},Flat"
    return f"PCAR{min(PCA_DIM, dim)},IVF1024,PQ32"


class TrackIndex:
    """A FAISS index over flattened gallery features ([n, c, p] → [n, c*p]), ids = row numbers given at add."""

    def __init__(self, index, factory: str) -> None:
        self.index = index
        self.factory = factory

    @classmethod
    def build(cls, chunks, n_total: int, dim: int, train: np.ndarray, nprobe: int = 32) -> "TrackIndex":
        """chunks: iterable of (ids [k] int64, features [k, dim] float32); train: a sample [m, dim] float32."""
        import faiss
        factory = index_factory(n_total, dim)
        index = faiss.index_factory(dim, factory)
        index.train(np.ascontiguousarray(train, np.float32))
        idmap = faiss.IndexIDMap(index)
        for ids, feats in chunks:
            idmap.add_with_ids(np.ascontiguousarray(feats, np.float32), np.asarray(ids, np.int64))
        faiss.extract_index_ivf(index).nprobe = nprobe
        return cls(idmap, factory)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """[q, dim] → candidate ids [q, k] (-1 where fewer exist)."""
        _, ids = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return ids

    def nbytes(self) -> int:
        import faiss
        return int(faiss.serialize_index(self.index).nbytes)

    def save(self, path) -> None:
        import faiss
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path, nprobe: int = 32) -> "TrackIndex":
        import faiss
        index = faiss.read_index(str(path))
        faiss.extract_index_ivf(index).nprobe = nprobe
        return cls(index, "loaded")


def part_distances(probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """OpenGait's euc distance [q, n] between probe [q, c, p] and gallery [n, c, p], float32, computed per part
    with one matrix product each (same formula as match.distance_matrix, for arrays of any size)."""
    q = probe.astype(np.float32)
    g = gallery.astype(np.float32)
    out = np.zeros((len(q), len(g)), np.float32)
    for part in range(q.shape[2]):
        x, y = q[:, :, part], g[:, :, part]
        sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
        out += np.sqrt(np.maximum(sq, 0))
    return out / q.shape[2]


def exact_top1(probes: np.ndarray, features, chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the nearest gallery row (and its distance) for each probe, the gallery read in chunks
    (``features`` may be a memory-mapped array)."""
    best = np.full(len(probes), np.inf, np.float32)
    arg = np.full(len(probes), -1, np.int64)
    for s in range(0, len(features), chunk):
        d = part_distances(probes, np.asarray(features[s:s + chunk]))
        j = d.argmin(1)
        v = d[np.arange(len(probes)), j]
        better = v < best
        best[better], arg[better] = v[better], j[better] + s
    return arg, best


def rerank(probes: np.ndarray, candidates: np.ndarray, features) -> tuple[np.ndarray, np.ndarray]:
    """The exact nearest among each probe's candidate rows: (row [q], distance [q])."""
    rows = np.full(len(probes), -1, np.int64)
    dist = np.full(len(probes), np.inf, np.float32)
    for i, cand in enumerate(candidates):
        cand = np.unique(cand[cand >= 0])
        if not len(cand):
            continue
        d = part_distances(probes[i:i + 1], np.asarray(features[cand]))[0]
        j = int(d.argmin())
        rows[i], dist[i] = cand[j], d[j]
    return rows, dist


def benchmark(n: int, folder, queries: int = 200, clusters: int = 2000, seed: int = 0,
              config: SearchConfig = SearchConfig(), shape: tuple[int, int] = (256, 16)) -> dict:
    """Synthetic clustered gallery of ``n`` identities of OpenGait's shape [256, 16] (float16 on disk), queries that
    are noisy views of random identities; the index's build time, bytes per identity, query latency and rank-1
    agreement with brute force."""
    from pathlib import Path
    rng = np.random.default_rng(seed)
    c, p = shape
    dim = c * p
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    feats = np.lib.format.open_memmap(folder / "gallery_f16.npy", mode="w+", dtype=np.float16, shape=(n, c, p))
    centers = rng.normal(0, 1.0, (clusters, c, p)).astype(np.float32)
    t0 = time.perf_counter()
    step = 50_000
    for s in range(0, n, step):
        k = min(step, n - s)
        owner = rng.integers(0, clusters, k)
        feats[s:s + k] = (centers[owner] + rng.normal(0, 0.6, (k, c, p)).astype(np.float32)).astype(np.float16)
    feats.flush()
    gen_s = time.perf_counter() - t0
    picked = rng.choice(n, queries, replace=False)
    probes = np.asarray(feats[picked], np.float32) + rng.normal(0, 0.25, (queries, c, p)).astype(np.float32)

    t0 = time.perf_counter()
    exact_rows, _ = exact_top1(probes, feats)
    exact_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    sample = np.asarray(feats[rng.choice(n, min(n, 50_000), replace=False)], np.float32).reshape(-1, dim)

    def chunks():
        for s in range(0, n, step):
            yield np.arange(s, min(n, s + step)), np.asarray(feats[s:s + step], np.float32).reshape(-1, dim)
    index = TrackIndex.build(chunks(), n, dim, sample, config.nprobe)
    build_s = time.perf_counter() - t0
    lat = []
    ann_rows = np.empty(queries, np.int64)
    for i in range(queries):
        t1 = time.perf_counter()
        cand = index.search(probes[i:i + 1].reshape(1, dim), config.shortlist)
        ann_rows[i] = rerank(probes[i:i + 1], cand, feats)[0][0]
        lat.append(time.perf_counter() - t1)
    index_bytes = index.nbytes()
    return {"identities": n, "shape": [c, p], "factory": index.factory, "queries": queries,
            "shortlist": config.shortlist, "nprobe": config.nprobe,
            "rank1_agreement": float((ann_rows == exact_rows).mean()),
            "query_truth": float((exact_rows == picked).mean()),
            "build_s": round(build_s, 1), "generate_s": round(gen_s, 1),
            "index_bytes_per_identity": round(index_bytes / n, 1),
            "features_bytes_per_identity": c * p * 2,
            "query_latency_ms": {"median": round(1000 * float(np.median(lat)), 2),
                                 "p95": round(1000 * float(np.percentile(lat, 95)), 2)},
            "exact_ms_per_query": round(1000 * exact_s / queries, 1)}
