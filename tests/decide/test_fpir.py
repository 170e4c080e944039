"""FPIR statistics: Clopper-Pearson against scipy's beta quantiles, the 1-to-N formula on a uniform impostor
distribution (closed form), dependence through the independent-pair count, and the pairs a target needs."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from allinone.decide.fpir import (Evidence, Source, clopper_pearson, fpir_from_rate, greedy_independent,
                                 independent_people, rate_for_fpir)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 100), (10, 10), (7, 1000), (2.5, 40)])
def test_clopper_pearson_is_the_beta_quantiles(k, n):
    lo, hi = clopper_pearson(k, n)
    want_lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    want_hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert float(lo) == pytest.approx(want_lo, rel=1e-12, abs=1e-15)
    assert float(hi) == pytest.approx(want_hi, rel=1e-12)


def test_clopper_pearson_at_zero_is_the_rule_of_three_closed_form():
    # k = 0: the upper bound solves (1 - p)^n = 0.025, p = 1 - 0.025^(1/n)
    _, hi = clopper_pearson(0, 200)
    assert float(hi) == pytest.approx(1 - 0.025 ** (1 / 200), rel=1e-10)


def test_fpir_formula_and_its_inverse():
    assert float(fpir_from_rate(0.5, 2)) == pytest.approx(0.75)  # 1 - (1 - 0.5)^2
    assert float(fpir_from_rate(1e-12, 10)) == pytest.approx(1e-11, rel=1e-6)  # no cancellation
    f = rate_for_fpir(0.01, 20)
    assert f == pytest.approx(1 - 0.99 ** (1 / 20), rel=1e-12)
    assert (1 - f) ** 20 == pytest.approx(0.99, rel=1e-12)


def test_uniform_impostors_give_the_closed_form_fpir_and_threshold():
    # impostor distances i/n, i = 1..n, all independent: F(t) = floor(t n) / n, so FPIR(t) = 1 - (1 - F)^N
    n, N = 100_000, 10
    d = np.arange(1, n + 1) / n
    ev = Evidence([Source("u", d, n, n)])
    (e,) = ev.estimate(0.25, N)
    assert e.per_pair == pytest.approx(0.25) and e.fpir == pytest.approx(1 - 0.75 ** 10, rel=1e-12)
    assert e.low == pytest.approx(1 - (1 - beta.ppf(0.025, 25_000, 75_001)) ** 10, rel=1e-10)
    assert e.high == pytest.approx(1 - (1 - beta.ppf(0.975, 25_001, 75_000)) ** 10, rel=1e-10)
    # the threshold for FPIR 0.01: the largest k/n whose 95% upper bound on F stays within f* = 1 - 0.99^(1/N)
    f_star = 1 - 0.99 ** (1 / N)
    ks = np.arange(0, 200)
    ok = beta.ppf(0.975, ks + 1, n - ks) <= f_star
    k = int(ks[ok][-1])  # hand: k + 1.96 sqrt(k) ~ f* n = 100.4 → k ~ 83
    assert 75 < k < 90
    est, supported = ev.choose(0.01, N)
    assert supported and est.threshold == pytest.approx(k / n)
    assert est.high <= 0.01 < fpir_from_rate(beta.ppf(0.975, k + 2, n - k - 1), N)


def test_dependent_pairs_widen_the_interval_to_their_independent_count():
    d = np.arange(1, 1001) / 1000
    full = Evidence([Source("a", d, 1000, 1000)]).estimate(0.1, 1)[0]
    dep = Evidence([Source("a", d, 1000, 100)]).estimate(0.1, 1)[0]
    assert full.fpir == dep.fpir == pytest.approx(0.1)
    # 100 independent pairs with the same rate: 10 of 100 within
    assert dep.low == pytest.approx(beta.ppf(0.025, 10, 91)) and dep.high == pytest.approx(beta.ppf(0.975, 11, 90))
    assert dep.high - dep.low > 2.5 * (full.high - full.low)


def test_too_few_pairs_cannot_support_the_target_and_say_how_many_would():
    ev = Evidence([Source("run", np.array([3.0, 4.0, 5.0, 6.0, 7.0, 8.0]), 6, 3)])
    est, supported = ev.choose(0.01, 20)
    assert not supported
    assert est.threshold < 3.0 and est.threshold == np.nextafter(3.0, 0)  # point estimate 0: below the nearest
    # 3 independent pairs, none within: per-pair upper bound 1 - 0.025^(1/3), so FPIR up to 1 - 0.025^(20/3)
    assert est.fpir == 0.0 and est.high == pytest.approx(1 - 0.025 ** (20 / 3))
    f = 1 - 0.99 ** (1 / 20)
    assert ev.pairs_needed(0.01, 20) == math.ceil(math.log(0.025) / math.log(1 - f))  # ~7,350


def test_a_calibration_tail_and_quantiles_count_pairs_beyond_the_stored_distances():
    lowest = np.array([0.1, 0.2, 0.3])
    s = Source("cal", lowest, 100, 50, (np.array([0.0, 0.5, 1.0]), np.array([0.1, 1.0, 2.0])))
    assert s.within(np.array([0.05, 0.2, 0.3])).tolist() == [0, 2, 3]
    assert s.within(np.array([1.0]))[0] == pytest.approx(50.0)  # half the pairs below the median 1.0
    assert s.within(np.array([0.31]))[0] >= 3


def test_greedy_independent_uses_each_track_once():
    assert greedy_independent([("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]) == 2  # (a, b), (c, d)
    assert greedy_independent([]) == 0


# Coverage by simulation: P people, S sequences each; a sequence is its person's point plus noise, both Gaussian
# in DIM dimensions. An impostor pair's difference is then N(0, 2 (SP² + SN²) I), so the true per-pair rate is
# F(t) = chi2_DIM(t² / (2 (SP² + SN²))): an independent truth, not the code's estimate.
SP, SN, DIM = 1.0, 0.5, 8


def _true_rate(t):
    from scipy.stats import chi2
    return chi2.cdf(np.asarray(t) ** 2 / (2 * (SP ** 2 + SN ** 2)), DIM)


def _people_sample(rng, people: int, per_person: int):
    """All impostor distances of one sample, and the evidence the project counts from them (people, not
    sequences: every pair of sequences of persons a and b is the person pair (a, b))."""
    mu = rng.normal(0, SP, (people, DIM))
    x = (mu[:, None, :] + rng.normal(0, SN, (people, per_person, DIM))).reshape(-1, DIM)
    person = np.repeat(np.arange(people), per_person)
    sq = (x * x).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0))
    iu, ju = np.triu_indices(len(x), 1)
    imp = person[iu] != person[ju]
    pp = np.unique(person[iu][imp] * people + person[ju][imp])
    n_eff = independent_people((int(k // people), int(k % people), "sample") for k in pp)
    dist = np.sort(d[iu, ju][imp])
    return Evidence([Source("sim", dist, len(dist), n_eff)])


@pytest.mark.parametrize("per_person", [30, 60])
def test_the_interval_covers_the_true_rate_when_sequences_of_a_person_are_alike(per_person):
    # 10 people: counted by sequences (the greedy matching over sequence keys), the 95% interval missed the true
    # rate in 11% (x30) and 30% (x60) of samples; counted by people it must miss at most 5%
    from scipy.stats import chi2
    f0 = 0.05
    t = float(np.sqrt(chi2.ppf(f0, DIM) * 2 * (SP ** 2 + SN ** 2)))
    rng = np.random.default_rng(per_person)
    trials, miss = 100, 0
    for _ in range(trials):
        e = _people_sample(rng, 10, per_person).estimate(t, 1)[0]
        miss += not (e.low <= f0 <= e.high)
    assert miss / trials <= 0.05 + 0.03  # nominal, plus Monte Carlo slack (sd 2.2% at 100 trials)


@pytest.mark.parametrize("people, per_person, n_gallery, target", [(10, 60, 5, 0.5), (40, 10, 1, 0.3)])
def test_a_supported_threshold_is_within_the_target_as_often_as_claimed(people, per_person, n_gallery, target):
    # "supported" means the 95% upper bound is within the target: the true FPIR may exceed it in at most 2.5% of
    # samples. Counted by sequences, 10 people x 60 exceeded it in 22% of samples (N = 5, target 0.5)
    from allinone.decide.fpir import fpir_from_rate
    rng = np.random.default_rng(people)
    trials, over = 100, 0
    for _ in range(trials):
        est, ok = _people_sample(rng, people, per_person).choose(target, n_gallery)
        over += bool(ok and fpir_from_rate(_true_rate(est.threshold), n_gallery) > target)
    assert over / trials <= 0.025 + 0.03


def test_independent_people_counts_disjoint_person_pairs_within_a_scope_and_the_largest_scope():
    pairs = [("ann", "bob", "v1"), ("ann", "cat", "v1"), ("bob", "cat", "v1"), ("dan", "eve", "v1"),
             ("x", "y", "v2"), ("ann", "ann", "v2")]
    # v1: (ann, bob) and (dan, eve); v2: (x, y), a person with themself never a pair; the larger scope counts
    assert independent_people(pairs) == 2
    # ten gallery identities with many tracks each: five disjoint pairs, however many track pairs
    assert independent_people((a, b, "gallery") for a in range(10) for b in range(a + 1, 10)
                              for _ in range(30)) == 5
