"""Fitting score-to-LR models on labelled comparisons (``python main.py calibrate --lr``).

The comparisons are every unordered pair of distinct sequences of an ``evaluate`` folder's embeddings: mated when the
two have the same label, non-mated otherwise. Pairs are not independent (a sequence is in many of them) and an
identity with many sequences would otherwise outweigh one with few (its mated pairs grow with the square of its
sequence count), so each pair is weighted by 1 / (pairs of its identity pair): every identity contributes the same
weight to the mated class and every pair of identities the same weight to the non-mated class. Within an identity
pair every sequence is in the same number of pairs, so no sequence dominates either. Weights are scaled to a mean of
1 within each class and the two classes are balanced (prior odds 1), so a fitted probability ratio is an LR.

Fits (decide/lr_model.py applies them): logistic regression of mated on distance (scikit-learn's LogisticRegression,
its L2 penalty made negligible) and PAV / isotonic regression (scikit-learn's IsotonicRegression, non-increasing in
distance). Both are then bounded by the empirical lower and upper bounds (ELUB) of Vergeer et al. (2016): the
widest LR range over which the fitted LRs, on the data they were fitted on plus one misleading pair added to each
class, never do worse in expected cost than the uninformative LR = 1. The NFI's ``lir`` has an ELUB too
(``lir.bayeserror.elub``), but unweighted, with a pairs × thresholds matrix (gigabytes at 40,000 pairs), and its one
release that installs on Python 3.10 (0.1.29) also installs a top-level ``tests`` package that shadows this repo's;
so this is the rule written from the paper, with weights and sorted counts, tested against a hand derivation.
The pairs are not independent (a person is in many of them, and one person's sequences are alike), so the bounds
count people: the weights are scaled so that the mated class weighs as many units as there are identities with mated
pairs and the non-mated class as many as there are disjoint pairs of identities (floor(P/2) for P people, as the FPIR
interval counts them, decide/fpir.py), and the misleading pair ELUB adds weighs one such unit. Ten people then
support LRs of a few units, not the thousands their 19,440 pairs would (tests/evaluate/test_lr.py measures, by
simulation, that new people's LRs at the bounds are no more often misleading than an LR of that size allows).

Validation (``cross_validated_lrs``): identities are split into k folds; the LR of every pair is computed by a model
fitted on the pairs of the other folds only, without any sequence of either of its identities. With as many folds
as identities this is leave-two-identities-out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from allinone.decide.lr_model import LRFit
from allinone.decide.distance import distance_matrix


@dataclass(frozen=True)
class Pairs:
    """Labelled comparisons: distance (n,), mated (n,) bool, id_a / id_b (n,) identity indices (id_a <= id_b), seq_a /
    seq_b (n,) sequence indices, weight (n,) per-pair weight (mean 1 within each class)."""

    distance: np.ndarray
    mated: np.ndarray
    id_a: np.ndarray
    id_b: np.ndarray
    seq_a: np.ndarray
    seq_b: np.ndarray
    weight: np.ndarray
    identities: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.distance)
        for name in ("mated", "id_a", "id_b", "seq_a", "seq_b", "weight"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be ({n},), got {getattr(self, name).shape}")
        if not np.all(np.isfinite(self.distance)):
            raise ValueError("distances must be finite")

    def __len__(self) -> int:
        return len(self.distance)

    def units(self) -> tuple[int, int]:
        """The independent units of each class, counted in people: identities with mated pairs, and disjoint pairs
        of identities among the non-mated pairs."""
        from allinone.decide.fpir import independent_people
        mated = len(np.unique(self.id_a[self.mated]))
        key = np.unique(self.id_a[~self.mated].astype(np.int64) * (len(self.identities) + 1) + self.id_b[~self.mated])
        n = len(self.identities) + 1
        return mated, independent_people((int(k // n), int(k % n), "data") for k in key)

    def subset(self, keep: np.ndarray) -> "Pairs":
        return Pairs(self.distance[keep], self.mated[keep], self.id_a[keep], self.id_b[keep], self.seq_a[keep],
                     self.seq_b[keep], class_mean_one(self.weight[keep], self.mated[keep]), self.identities)


def class_mean_one(weight: np.ndarray, mated: np.ndarray) -> np.ndarray:
    """``weight`` scaled so that it averages 1 within the mated and within the non-mated class."""
    w = np.asarray(weight, dtype=np.float64).copy()
    for c in (True, False):
        m = mated == c
        if m.any():
            w[m] *= m.sum() / w[m].sum()
    return w


def identity_pair_weights(id_a: np.ndarray, id_b: np.ndarray, mated: np.ndarray) -> np.ndarray:
    """1 / (pairs of the same identity pair), scaled to mean 1 per class."""
    key = id_a.astype(np.int64) * (int(max(id_a.max(initial=0), id_b.max(initial=0))) + 1) + id_b
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    return class_mean_one(1.0 / counts[inv], mated)


def pairs_from_embeddings(features: np.ndarray, labels: np.ndarray, metric: str, chunk: int = 512) -> Pairs:
    """Every unordered pair of distinct sequences, with OpenGait's distance of ``metric``."""
    labels = np.asarray(labels).astype(str)
    names, lab = np.unique(labels, return_inverse=True)
    n = len(labels)
    iu, ju = np.triu_indices(n, k=1)
    dist = np.empty(len(iu), np.float64)
    # row blocks of the distance matrix, so memory stays at chunk × n
    starts = np.searchsorted(iu, np.arange(0, n, chunk))
    for s, r0 in zip(starts, range(0, n, chunk)):
        r1 = min(n, r0 + chunk)
        block = distance_matrix(features[r0:r1], features, metric).astype(np.float64)
        e = np.searchsorted(iu, r1)
        dist[s:e] = block[iu[s:e] - r0, ju[s:e]]
    a, b = lab[iu], lab[ju]
    id_a, id_b = np.minimum(a, b), np.maximum(a, b)
    mated = a == b
    return Pairs(dist, mated, id_a, id_b, iu, ju, identity_pair_weights(id_a, id_b, mated), tuple(names))


def _balanced(w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights whose two class totals are equal (half the count each), so fitted odds are LRs."""
    out = np.asarray(w, dtype=np.float64).copy()
    for c in (0, 1):
        m = y == c
        out[m] *= (len(y) / 2) / out[m].sum()
    return out


def elub_bounds(lrs: np.ndarray, mated: np.ndarray, weight: np.ndarray | None = None, add_misleading: int = 1,
                step: float = 0.01, extremes: tuple[float, float] = (math.exp(-20), math.exp(20)),
                units: tuple[float, float] | None = None) -> tuple[float, float]:
    """Empirical lower and upper bounds (Vergeer et al. 2016) of ``lrs``: over thresholds t on a natural-log grid of
    ``step``, the expected cost of deciding "same" when LR > t, P(LR <= t | mated) + t · P(LR > t | non-mated), with
    ``add_misleading`` pairs of weight 1 added to each class (a mated one always rejected, a non-mated one always
    accepted), compared with the uninformative LR = 1's (1 for t >= 1, t below). The bounds are the thresholds
    nearest 1 where the system does worse, one step inwards; never on the wrong side of 1. ``units`` (mated,
    non-mated): the class totals the weights are scaled to, so that the added pair weighs one independent unit
    (Pairs.units); by default each pair is a unit."""
    lrs = np.clip(np.asarray(lrs, dtype=np.float64), *extremes)
    mated = np.asarray(mated, dtype=bool)
    w = np.ones(len(lrs)) if weight is None else np.asarray(weight, dtype=np.float64).copy()
    if units is not None:
        for c, total in ((True, units[0]), (False, units[1])):
            if (mated == c).any():
                w[mated == c] *= float(total) / w[mated == c].sum()
    llr = np.log(lrs)
    grid = np.exp(np.arange(min(0.0, llr.min()), max(0.0, llr.max()) + step, step))

    def above(c: bool) -> tuple[np.ndarray, float]:  # weight of class c strictly above each threshold, and total
        x, wx = llr[mated == c], w[mated == c]
        order = np.argsort(x)
        x, cw = np.exp(x[order]), np.concatenate([[0.0], np.cumsum(wx[order])])
        total = cw[-1]
        return total - cw[np.searchsorted(x, grid, side="right")], total

    acc_m, tot_m = above(True)
    acc_n, tot_n = above(False)
    k = float(add_misleading)
    p_miss = (tot_m - acc_m + k) / (tot_m + k)  # the added mated pair is never accepted
    p_fa = (acc_n + k) / (tot_n + k)  # the added non-mated pair is always accepted
    system = p_miss + grid * p_fa
    neutral = np.where(grid >= 1, 1.0, grid)
    worse = neutral / system < 1
    left, right = grid[(grid <= 1) & worse], grid[(grid >= 1) & worse]
    lower = float(left.max() * math.exp(step)) if len(left) else float(grid.min())
    upper = float(right.min() / math.exp(step)) if len(right) else float(grid.max())
    return min(lower, 1.0), max(upper, 1.0)


def fit_lr(distance: np.ndarray, mated: np.ndarray, weight: np.ndarray | None = None, method: str = "logistic",
           bound: bool = True, units: tuple[int, int] | None = None) -> LRFit:
    """A score-to-LR model of ``distance`` (smaller = more similar), ELUB-bounded unless ``bound`` is False, the
    bounds counted in ``units`` (Pairs.units: people) when given."""
    d = np.asarray(distance, dtype=np.float64)
    y = np.asarray(mated, dtype=bool).astype(int)
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("fitting an LR model needs mated and non-mated pairs")
    w = _balanced(np.ones(len(d)) if weight is None else weight, y)
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression
        m, s = float(d.mean()), float(d.std()) or 1.0
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(((d - m) / s)[:, None], y, sample_weight=w)
        b1, b0 = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        fit = LRFit("logistic", {"a": b0 - b1 * m / s, "b": b1 / s})
    elif method == "pav":
        from sklearn.isotonic import IsotonicRegression
        iso = IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            d, y, sample_weight=w)
        fit = LRFit("pav", {"d": [float(x) for x in iso.X_thresholds_], "p": [float(x) for x in iso.y_thresholds_]})
    else:
        raise ValueError(f"unknown method {method!r}")
    if not bound:
        return fit
    lo, hi = elub_bounds(fit.raw_lr(d), y.astype(bool), weight, units=units)
    extra = {"rule": "ELUB (Vergeer et al. 2016), one misleading unit added per class"}
    if units is not None:
        extra.update({"counted": "in people: each identity one mated unit, each disjoint pair of identities one "
                                 "non-mated unit", "units": {"mated": int(units[0]), "non_mated": int(units[1])}})
    return LRFit(fit.method, fit.params, (lo, hi), extra)


def identity_folds(n_identities: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold index of each identity: a seeded permutation dealt round-robin into ``k`` folds."""
    order = np.random.default_rng(seed).permutation(n_identities)
    folds = np.empty(n_identities, np.int64)
    folds[order] = np.arange(n_identities) % k
    return folds


def cross_validated_lrs(pairs: Pairs, method: str, k: int = 10, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Held-out LRs of every pair: each from a model fitted without any pair touching either identity's fold.
    Returns (lrs, how) where ``how`` records folds and fits."""
    present = np.unique(np.concatenate([pairs.id_a, pairs.id_b]))
    n_id = len(present)
    if n_id < 4:
        raise ValueError(f"cross-validation by identity needs at least 4 identities, got {n_id}")
    k = min(k, n_id)
    folds = np.full(len(pairs.identities), -1, np.int64)
    folds[present] = identity_folds(n_id, k, seed)
    fa, fb = folds[pairs.id_a], folds[pairs.id_b]
    lrs = np.full(len(pairs), np.nan)
    fits = 0
    for f in range(k):
        for g in range(f, k):
            test = ((fa == f) & (fb == g)) | ((fa == g) & (fb == f))
            if not test.any():
                continue
            train = (fa != f) & (fa != g) & (fb != f) & (fb != g)
            sub = pairs.subset(train)
            if sub.mated.all() or not sub.mated.any():
                raise ValueError("a cross-validation fold left no mated or no non-mated pairs to fit on")
            model = fit_lr(sub.distance, sub.mated, sub.weight, method, units=sub.units())
            lrs[test] = model.lr(pairs.distance[test])
            fits += 1
    return lrs, {"scheme": "k-fold by identity; each pair's LR from a model fitted without either identity's fold",
                 "k": int(k), "seed": seed, "fits": fits,
                 "folds": {pairs.identities[i]: int(folds[i]) for i in present}}


__all__ = ["Pairs", "class_mean_one", "cross_validated_lrs", "elub_bounds", "fit_lr", "identity_folds",
           "identity_pair_weights", "pairs_from_embeddings"]
