"""Open-set error rates over a probe condition's probe × gallery pairs.

Verification (1:1): every probe-gallery pair is a genuine pair (same label) or an impostor pair.
  TAR@FAR x: with the impostor distances sorted d1 <= d2 <= ... (n of them) and k = floor(x * n), the threshold is
  d_k (just below d1 when k = 0, so no impostor is accepted); TAR = share of genuine pairs with distance <= it.
  EER: the rate at which false accepts (impostor pairs <= t) and false rejects (genuine pairs > t) are equal; over
  the observed distances as thresholds, their mean where they are closest.
Identification (1:N, NIST's open-set sense, rank 1): a mated search is a probe whose identity is in the gallery; its
  non-mated search is the same probe with every gallery sequence of its identity left out.
  FPIR(t) = share of non-mated searches whose nearest gallery sequence is within t;
  FNIR(t) = share of mated searches whose nearest gallery sequence is not of its identity or is farther than t.
  FNIR@FPIR x: FNIR at the threshold that gives FPIR x, chosen over the non-mated nearest distances with the rule
  of TAR@FAR.
"""
from __future__ import annotations

import numpy as np

from allinone.decide.threshold import threshold_at_far

FARS = (0.1, 0.01, 0.001)
FPIRS = (0.01, 0.1)


def verification(dist: np.ndarray, same: np.ndarray) -> dict:
    """dist [n, m] probe × gallery distances, same [n, m] True for genuine pairs."""
    gen = np.sort(dist[same].astype(np.float64))
    imp = np.sort(dist[~same].astype(np.float64))
    out: dict = {"genuine_pairs": int(len(gen)), "impostor_pairs": int(len(imp))}
    if not len(gen) or not len(imp):
        out.update({"TAR@FAR": {str(x): None for x in FARS}, "EER": None})
        return out
    tar, thr = {}, {}
    for x in FARS:
        t = threshold_at_far(imp, x)
        thr[str(x)] = t
        tar[str(x)] = float(np.searchsorted(gen, t, side="right") / len(gen))
    out["TAR@FAR"] = tar
    out["threshold@FAR"] = thr
    ts = np.unique(np.concatenate([gen, imp]))
    far = np.searchsorted(imp, ts, side="right") / len(imp)
    frr = 1.0 - np.searchsorted(gen, ts, side="right") / len(gen)
    i = int(np.argmin(np.abs(far - frr)))
    out["EER"] = float((far[i] + frr[i]) / 2)
    out["threshold@EER"] = float(ts[i])
    return out


def searches(dist: np.ndarray, probe_y: np.ndarray, gallery_y: np.ndarray) -> dict[str, np.ndarray]:
    """Per probe: the nearest non-mated distance (every probe), and for mated probes the nearest distance and
    whether that nearest gallery sequence is of the probe's identity."""
    same = probe_y[:, None] == gallery_y[None, :]
    mated = same.any(axis=1)
    nonmated = np.where(same, np.inf, dist).min(axis=1) if dist.shape[1] else np.full(len(dist), np.inf)
    finite = np.isfinite(nonmated)
    nearest = np.argmin(dist, axis=1) if dist.shape[1] else np.zeros(len(dist), int)
    return {"nonmated_nearest": nonmated[finite].astype(np.float64),
            "mated_nearest": dist[mated].min(axis=1).astype(np.float64) if mated.any() else np.zeros(0),
            "mated_correct": same[np.arange(len(dist)), nearest][mated] if mated.any() else np.zeros(0, bool)}


def fpir_fnir(nonmated: np.ndarray, mated_nearest: np.ndarray, mated_correct: np.ndarray, t: float):
    fpir = float((nonmated <= t).mean()) if len(nonmated) else None
    fnir = float(1.0 - (mated_correct & (mated_nearest <= t)).mean()) if len(mated_nearest) else None
    return fpir, fnir


def identification(s: dict[str, np.ndarray]) -> dict:
    out: dict = {"mated_searches": int(len(s["mated_nearest"])), "non_mated_searches": int(len(s["nonmated_nearest"]))}
    if not len(s["nonmated_nearest"]) or not len(s["mated_nearest"]):
        out["FNIR@FPIR"] = {str(x): None for x in FPIRS}
        return out
    fnir, thr = {}, {}
    for x in FPIRS:
        t = threshold_at_far(s["nonmated_nearest"], x)
        thr[str(x)] = t
        fnir[str(x)] = fpir_fnir(s["nonmated_nearest"], s["mated_nearest"], s["mated_correct"], t)[1]
    out["FNIR@FPIR"] = fnir
    out["threshold@FPIR"] = thr
    return out
