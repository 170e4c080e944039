"""Evaluation math the evaluate command writes beside OpenGait's numbers: each condition's CMC curve (the plot) and
the impostor tables of impostors.npz (what a calibration file keeps), independence counted in people."""
from __future__ import annotations

import numpy as np

from allinone.decide.distance import distance_matrix


def cmc_curve(dist: np.ndarray, probe_y: np.ndarray, gallery_y: np.ndarray, max_rank: int = 20) -> list[float]:
    """Rank-1..k identification rates of the probes that have a mate in the gallery (ties kept in gallery order)."""
    same = probe_y[:, None] == gallery_y[None, :]
    mated = same.any(axis=1)
    if not mated.any():
        return []
    order = np.argsort(dist[mated], axis=1, kind="stable")
    hits = np.take_along_axis(same[mated], order, axis=1)
    first = hits.argmax(axis=1)
    k = min(max_rank, dist.shape[1])
    return [float((first < r).mean()) for r in range(1, k + 1)]


def independent_impostors(probe: np.ndarray, gallery: np.ndarray, labels: np.ndarray, used: set) -> int:
    """Disjoint pairs of people among the impostor pairs (probe, gallery sequence of another label): the sequences
    of one person are alike, so independence is counted in people (decide/fpir.py). Greedy: probe labels in order,
    each with the first free gallery label of another person; ``used`` (labels) is shared across calls, since the
    conditions of one evaluation are the same people."""
    n = 0
    free = [g for g in dict.fromkeys(str(labels[int(i)]) for i in gallery) if g not in used]
    for p in dict.fromkeys(str(labels[int(i)]) for i in probe):
        if p in used:
            continue
        for i, g in enumerate(free):
            if g != p and g not in used:
                used.update((p, g))
                free.pop(i)
                n += 1
                break
    return n


def impostor_tables(conditions, feature: np.ndarray, labels: np.ndarray, metric: str) -> dict[str, np.ndarray]:
    """impostors.npz: per condition and pooled (``all``), the impostor distribution a calibration file keeps
    (decide/calibration.py impostor_record) as arrays: ``.lowest``, ``.count``, ``.independent``, ``.p``, ``.d``."""
    from allinone.decide.calibration import impostor_record

    out: dict[str, np.ndarray] = {}
    pooled, used_all, n_all = [], set(), 0
    for c in conditions:
        pi, gi = np.flatnonzero(c.probe), np.flatnonzero(c.gallery)
        dist = distance_matrix(feature[pi], feature[gi], metric)
        different = (labels[pi][:, None] != labels[gi][None, :]) & (pi[:, None] != gi[None, :])
        imp = dist[different].astype(np.float64)
        pooled.append(imp)
        n_all += independent_impostors(pi, gi, labels, used_all)
        rec = impostor_record(imp, independent_impostors(pi, gi, labels, set()))
        out.update(_table(c.name, rec))
    out.update(_table("all", impostor_record(np.concatenate(pooled) if pooled else np.zeros(0), n_all)))
    return out


def _table(name: str, rec: dict) -> dict[str, np.ndarray]:
    return {f"{name}.lowest": np.asarray(rec["lowest"]), f"{name}.count": np.asarray(rec["count"]),
            f"{name}.unit": np.asarray(rec["independent_unit"]),
            f"{name}.independent": np.asarray(rec["independent"]), f"{name}.p": np.asarray(rec["quantiles"]["p"]),
            f"{name}.d": np.asarray(rec["quantiles"]["d"])}


__all__ = ["cmc_curve", "impostor_tables", "independent_impostors"]
