"""The decision benchmark (python main.py bench --decisions N): N probe tracks over one long synthetic video,
decided by the assignment (decide/assign.py), timed, its memory measured, and checked against the one-program
exact solver where that runs too.

The video: tracks of 1–20 s (at 25 frames/s) arriving at random so that about ``on_screen`` people are in view at
any moment, which links them into long chains of overlaps; ``identities`` gallery people. 70 % of the tracks are a
gallery person (distance to them uniform in [0.05, 0.45]), the rest strangers; every track is also near three
random other identities (distances uniform in [0.3, 0.8], so some fall within the threshold and compete) and far
from all the others ([0.8, 1.6]). Threshold 0.5: each track has about 1–3 candidates.
"""
from __future__ import annotations

import resource
import time
import tracemalloc

import numpy as np

from allinone.decide.assign import assign_identities
from allinone.decide.match import margin_pairs

THRESHOLD = 0.5


DENSE_IN_VIEW, DENSE_CANDIDATES = 40.0, 10


def dense_video(n: int, identities: int, seed: int = 0):
    """(dist [n, identities] float32, spans [n, 2]): the dense crowd (module doc)."""
    rng = np.random.default_rng(seed)
    spans = _spans(rng, n, DENSE_IN_VIEW)
    dist = rng.uniform(0.8, 1.6, size=(n, identities)).astype(np.float32)
    k = min(DENSE_CANDIDATES, identities)
    near = np.stack([rng.choice(identities, k, replace=False) for _ in range(n)])
    dist[np.arange(n)[:, None], near] = rng.uniform(0.05, THRESHOLD, size=(n, k))
    return dist, spans


def _spans(rng, n: int, on_screen: float) -> np.ndarray:
    length = rng.integers(25, 500, size=n)
    total = int(length.sum() / on_screen) + 1
    starts = np.sort(rng.integers(0, total, size=n))
    return np.stack([starts, starts + length - 1], axis=1)


def synthetic_video(n: int, identities: int, on_screen: float = 6.0, seed: int = 0):
    """(dist [n, identities] float32, spans [n, 2]) for a long video."""
    rng = np.random.default_rng(seed)
    spans = _spans(rng, n, on_screen)
    dist = rng.uniform(0.8, 1.6, size=(n, identities)).astype(np.float32)
    near = rng.integers(0, identities, size=(n, 3))
    dist[np.arange(n)[:, None], near] = rng.uniform(0.3, 0.8, size=(n, 3))
    known = rng.random(n) < 0.7
    truth = rng.integers(0, identities, size=n)
    dist[np.flatnonzero(known), truth[known]] = rng.uniform(0.05, 0.45, size=int(known.sum()))
    return dist, spans


def _run(dist, spans, exact: bool, seconds: float | None, solve: dict):
    """Timed once as it is; then once more under tracemalloc (which slows Python) for the peak of the memory it
    allocates through Python and numpy (HiGHS's own C++ allocations are not traced: the process RSS covers them)."""
    t0 = time.perf_counter()
    chosen = assign_identities(*margin_pairs(dist, THRESHOLD), spans, exact=exact, seconds=seconds, solve=solve)
    wall = time.perf_counter() - t0
    tracemalloc.start()
    assign_identities(*margin_pairs(dist, THRESHOLD), spans, exact=exact, seconds=seconds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return chosen, wall, peak / 2 ** 20


def benchmark(n: int, identities: int = 500, exact_max: int = 3000, seed: int = 0, dense: bool = False,
              seconds: float | None = None) -> dict:
    """The bench's report. ``seconds``: the integer program's time limit (default MatchConfig's); the exact
    reference has none (dense: run up to 300 tracks only, it can take minutes)."""
    import scipy.optimize  # noqa: F401  (loaded before the clock starts: a run loads it once)
    import scipy.sparse  # noqa: F401,F811

    from allinone.config import MatchConfig

    seconds = MatchConfig().solve_seconds if seconds is None else seconds
    dist, spans = dense_video(n, identities, seed) if dense else synthetic_video(n, identities, seed=seed)
    rows, cols, _ = margin_pairs(dist, THRESHOLD)
    in_view = np.zeros(int(spans[:, 1].max()) + 2, np.int64)
    np.add.at(in_view, spans[:, 0], 1)
    np.add.at(in_view, spans[:, 1] + 1, -1)
    solve: dict = {}
    chosen, wall, peak = _run(dist, spans, False, seconds, solve)
    out = {"scene": "dense" if dense else "ordinary", "tracks": n, "identities": identities, "frames": int(spans[:, 1].max()) + 1,
           "max_in_view": int(np.cumsum(in_view).max()), "candidate_pairs": int(len(rows)),
           "matched": sum(c is not None for c in chosen), "seconds": round(wall, 3),
           "peak_traced_mb": round(peak, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}
    margin = float(sum(THRESHOLD - dist[i, c] for i, c in enumerate(chosen) if c is not None))
    out["total_margin"] = round(margin, 6)
    out["integer_program"] = {"time_limit_s": seconds, **solve} if solve else None
    if n <= (min(exact_max, 300) if dense else exact_max):
        ref, ref_wall, ref_peak = _run(dist, spans, True, None, {})
        ref_margin = float(sum(THRESHOLD - dist[i, c] for i, c in enumerate(ref) if c is not None))
        out["exact"] = {"seconds": round(ref_wall, 3), "peak_traced_mb": round(ref_peak, 1),
                        "same_decisions": ref == chosen, "total_margin": round(ref_margin, 6)}
    return out


__all__ = ["benchmark", "dense_video", "synthetic_video"]
