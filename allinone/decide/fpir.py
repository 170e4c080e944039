"""False-positive identification rate (FPIR) from impostor distances: the estimate, its 95% interval, and the
threshold for a target FPIR over a gallery of N embeddings (README, "The threshold").

A non-mated probe (someone not in the gallery) is falsely identified at threshold t if the nearest of the N gallery
embeddings it is compared with lies within t. With F(t) the per-pair impostor CDF (the chance that one impostor pair
is within t) and the N comparisons taken as independent,

    FPIR(t) = 1 - (1 - F(t))^N,   and for a target FPIR x the per-pair rate is  f* = 1 - (1 - x)^(1/N).

F is estimated from n impostor pairs as k(t)/n (k: pairs within t). The pairs are not independent: the sequences
or tracks of one person are alike, so every pair of the same two people moves together, and what varies from one
sample of people to the next is the people. The interval is therefore counted in people: a Clopper-Pearson interval
for a binomial of n_eff trials with the same rate, k_eff = n_eff k/n successes (a beta quantile takes a fractional
count), where n_eff is the number of disjoint pairs of people (a matching in which each person is in at most one
pair; floor(P/2) for P people). The rate over every pair of P people is a U-statistic of order 2 in the people, and
Hoeffding (1963) showed such a statistic is at least as concentrated as the mean of floor(P/2) independent terms in
[0, 1], which is in turn at least as concentrated as a binomial of floor(P/2) trials: so the interval errs wide, and
tests/decide/test_fpir.py measures its coverage by simulation. FPIR is increasing in F, so the interval's ends go
through the formula as they are.

The threshold is the largest candidate (the observed distances, and just below the nearest) whose 95% upper FPIR
bound is within the target ("supported"); where none is, the largest whose estimate is within it, marked
unsupported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


def clopper_pearson(k, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval for k successes in n trials (k may be fractional, arrays broadcast):
    lower = Beta(a/2; k, n-k+1) quantile (0 at k = 0), upper = Beta(1-a/2; k+1, n-k) quantile (1 at k = n)."""
    from scipy.stats import beta

    k, n = np.broadcast_arrays(np.asarray(k, np.float64), np.asarray(n, np.float64))
    a = 1.0 - level
    lo, hi = np.zeros(k.shape), np.ones(k.shape)
    inner_lo, inner_hi = k > 0, k < n  # the closed ends (0 and 1) need no quantile
    lo[inner_lo] = beta.ppf(a / 2, k[inner_lo], n[inner_lo] - k[inner_lo] + 1)
    hi[inner_hi] = beta.ppf(1 - a / 2, k[inner_hi] + 1, n[inner_hi] - k[inner_hi])
    if lo.ndim == 0:
        return lo[()], hi[()]
    return lo, hi


def fpir_from_rate(f, n_gallery: int):
    """1 - (1 - f)^N, computed without cancellation."""
    f = np.clip(np.asarray(f, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return -np.expm1(n_gallery * np.log1p(-f))


def rate_for_fpir(fpir: float, n_gallery: int) -> float:
    """The per-pair rate f* with 1 - (1 - f*)^N = fpir."""
    return float(-math.expm1(math.log1p(-fpir) / n_gallery))


@dataclass(frozen=True)
class Source:
    """Impostor distances from one place. ``lowest``: sorted, exact (all of them, or the lowest ones of a
    calibration, whose ``count`` is larger); ``quantiles`` (p, d): where F rises above the last stored distance."""

    name: str
    lowest: np.ndarray
    count: int
    independent: int
    quantiles: tuple[np.ndarray, np.ndarray] | None = None
    detail: dict | None = None

    def within(self, t: np.ndarray) -> np.ndarray:
        """How many of this source's pairs are at distance <= t (fractional beyond the stored tail)."""
        t = np.asarray(t, np.float64)
        k = np.searchsorted(self.lowest, t, side="right").astype(np.float64)
        if self.count > len(self.lowest) and len(self.lowest) and self.quantiles is not None:
            p, d = self.quantiles
            beyond = t > self.lowest[-1]
            if beyond.any():
                k[beyond] = np.maximum(len(self.lowest), self.count * np.interp(t[beyond], d, p))
        return k


@dataclass(frozen=True)
class Estimate:
    """FPIR at one threshold: the estimate and 95% interval, and the per-pair rate they come from."""

    threshold: float
    per_pair: float
    fpir: float
    low: float
    high: float


class Evidence:
    """The pooled impostor sources of a run: k(t) and n summed over sources, n_eff too."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = [s for s in sources if s.count > 0]
        self.n = int(sum(s.count for s in self.sources))
        self.n_eff = int(sum(s.independent for s in self.sources))

    def __bool__(self) -> bool:
        return self.n > 0

    def estimate(self, t, n_gallery: int) -> list[Estimate]:
        t = np.atleast_1d(np.asarray(t, np.float64))
        k = sum(s.within(t) for s in self.sources)
        rate = k / self.n
        lo, hi = clopper_pearson(rate * self.n_eff, self.n_eff)
        f, flo, fhi = fpir_from_rate(rate, n_gallery), fpir_from_rate(lo, n_gallery), fpir_from_rate(hi, n_gallery)
        return [Estimate(float(t[i]), float(rate[i]), float(f[i]), float(flo[i]), float(fhi[i]))
                for i in range(len(t))]

    def candidates(self) -> np.ndarray:
        d = np.unique(np.concatenate([s.lowest for s in self.sources]))
        below = np.nextafter(d[0], -np.inf) if d[0] > 0 else 0.0
        return np.concatenate([[max(below, 0.0)], d])

    def choose(self, target: float, n_gallery: int) -> tuple[Estimate, bool]:
        """The threshold for a target FPIR (module doc) and whether the evidence supports it."""
        c = self.candidates()
        rate = sum(s.within(c) for s in self.sources) / self.n  # non-decreasing along c

        def supported(i: int) -> bool:
            hi = clopper_pearson(rate[i] * self.n_eff, self.n_eff)[1]
            return bool(fpir_from_rate(hi, n_gallery) <= target)

        # the upper bound grows with the rate, so the supported candidates are a prefix: bisect for its end
        lo, hi = 0, len(c)  # supported(i) for i < lo; not for i >= hi
        while lo < hi:
            mid = (lo + hi) // 2
            if supported(mid):
                lo = mid + 1
            else:
                hi = mid
        if lo > 0:
            return self.estimate(c[lo - 1], n_gallery)[0], True
        fine = int(np.count_nonzero(fpir_from_rate(rate, n_gallery) <= target))  # also a prefix
        return self.estimate(c[max(fine - 1, 0)], n_gallery)[0], False

    def pairs_needed(self, target: float, n_gallery: int) -> int:
        """The fewest independent pairs, none within t, that would show FPIR <= target (Clopper-Pearson upper
        bound at k = 0: 1 - (a/2)^(1/n) <= f*)."""
        f = rate_for_fpir(target, n_gallery)
        return int(math.ceil(math.log((1 - LEVEL) / 2) / math.log1p(-f)))


def independent_people(pairs) -> int:
    """The disjoint pairs of people among impostor pairs given as (person a, person b, scope): within each scope
    (where distinct keys are known to be distinct people) a greedy matching of people; over scopes, the largest, since
    one person may be in several scopes (walk in several videos) and pairs of different scopes may share them."""
    by_scope: dict = {}
    for a, b, scope in pairs:
        if a != b:
            by_scope.setdefault(scope, {})[(a, b) if repr(a) <= repr(b) else (b, a)] = None
    return max((greedy_independent(list(p)) for p in by_scope.values()), default=0)


def greedy_independent(pairs: list[tuple]) -> int:
    """The size of a greedy matching over ``pairs`` (a, b) of hashable track keys: pairs taken in order, each
    track in at most one taken pair (at least half the largest such set)."""
    used: set = set()
    n = 0
    for a, b in pairs:
        if a not in used and b not in used:
            used.add(a)
            used.add(b)
            n += 1
    return n


__all__ = ["Estimate", "Evidence", "LEVEL", "Source", "clopper_pearson", "fpir_from_rate", "greedy_independent",
           "independent_people", "rate_for_fpir"]
