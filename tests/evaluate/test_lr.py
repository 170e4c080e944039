"""Score-to-LR models and their validation figures, against hand derivations and the NFI's lir (an independent
implementation of Cllr and ELUB)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from allinone.decide.lr_model import LRFit, read_lr_model, verbal, write_lr_model
from allinone.errors import UserError
from allinone.evaluate import lr as lrmod
from allinone.evaluate import validation as v
from tests.helpers import float32_distance_bound


def test_cllr_of_two_plus_two_lrs_by_hand():
    # mated LRs 2 and 8, non-mated 0.5 and 0.25:
    # mated:     log2(1 + 1/2) = log2 1.5 = 0.5849625, log2(1 + 1/8) = log2 1.125 = 0.1699250 -> mean 0.3774438
    # non-mated: log2(1 + 0.5) = 0.5849625,            log2(1 + 0.25) = 0.3219281            -> mean 0.4534453
    # Cllr = (0.3774438 + 0.4534453) / 2 = 0.4154445
    lrs = np.array([2.0, 8.0, 0.5, 0.25])
    mated = np.array([True, True, False, False])
    assert v.cllr(lrs, mated) == pytest.approx(0.4154445, abs=1e-6)
    # the formula written out once more, with weights that repeat the first mated pair: (2, 2, 8) vs (0.5, 0.25)
    w = np.array([2.0, 1.0, 1.0, 1.0])
    by_hand = 0.5 * ((2 * math.log2(1.5) + math.log2(1.125)) / 3 + (math.log2(1.5) + math.log2(1.25)) / 2)
    assert v.cllr(lrs, mated, w) == pytest.approx(by_hand, rel=1e-12)


def test_uninformative_lrs_give_cllr_one_and_separated_scores_cllr_min_zero():
    rng = np.random.default_rng(0)
    mated = rng.random(200) < 0.3
    assert v.cllr(np.ones(200), mated) == pytest.approx(1.0, abs=1e-12)
    # perfectly separated, badly calibrated (all LRs between 0.5 and 2): PAV separates them completely
    lrs = np.where(mated, 1.5 + rng.random(200) * 0.5, 0.5 + rng.random(200) * 0.5)
    assert v.cllr(lrs, mated) > 0.5
    assert v.cllr_min(lrs, mated) == pytest.approx(0.0, abs=1e-12)
    assert v.eer(lrs, mated) == 0.0


def _gaussian_case():
    mu1, mu0, sigma = 0.5, 2.0, 0.5  # distances: mated around 0.5, non-mated around 2.0

    def true_lr(s):
        return np.exp(((s - mu0) ** 2 - (s - mu1) ** 2) / (2 * sigma ** 2))

    from scipy.integrate import quad

    def pdf(s, mu):
        return math.exp(-(s - mu) ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))

    # Cllr = 1/2 [ int N(s; mu1) log2(1 + 1/LR(s)) ds + int N(s; mu0) log2(1 + LR(s)) ds ]
    lo, hi = mu1 - 12 * sigma, mu0 + 12 * sigma
    i1 = quad(lambda s: pdf(s, mu1) * math.log2(1 + 1 / float(true_lr(s))), lo, hi, limit=200)[0]
    i0 = quad(lambda s: pdf(s, mu0) * math.log2(1 + float(true_lr(s))), lo, hi, limit=200)[0]
    return mu1, mu0, sigma, true_lr, 0.5 * (i1 + i0)


def test_two_gaussians_known_lr_and_cllr():
    mu1, mu0, sigma, true_lr, cllr_true = _gaussian_case()
    assert 0.05 < cllr_true < 0.5
    rng = np.random.default_rng(1)
    n = 20000

    def sample():
        d = np.concatenate([rng.normal(mu1, sigma, n), rng.normal(mu0, sigma, n)])
        return d, np.arange(2 * n) < n

    d, mated = sample()
    # the true LRs have the integral's Cllr (Monte Carlo error ~0.005 at this n)
    assert v.cllr(true_lr(d), mated) == pytest.approx(cllr_true, abs=0.01)
    # ln LR = s (mu1 - mu0) / sigma^2 + (mu0^2 - mu1^2) / (2 sigma^2) = -6 s + 7.5
    fit = lrmod.fit_lr(d, mated, method="logistic", bound=False)
    assert fit.params["b"] == pytest.approx(-6.0, abs=0.25) and fit.params["a"] == pytest.approx(7.5, abs=0.3)
    # on data held apart from the fit: Cllr near the true one, Cllr_min below it, calibration loss small
    d2, mated2 = sample()
    for method in ("logistic", "pav"):
        model = lrmod.fit_lr(d, mated, method=method)
        res = v.validate(model.lr(d2), mated2)
        assert res["cllr"] == pytest.approx(cllr_true, abs=0.02), method
        assert res["cllr_min"] <= res["cllr"] + 1e-9 and res["cllr_cal"] < 0.02
        # the EER of two equal-variance Gaussians: Phi(-(mu0 - mu1) / (2 sigma)) = Phi(-1.5) = 0.0668
        assert res["eer"] == pytest.approx(0.0668, abs=0.006)
        assert np.all((model.lr(d2) >= model.bounds[0]) & (model.lr(d2) <= model.bounds[1]))
    # the ECE at prior odds 1 is Cllr
    o, e = v.ece_curve(true_lr(d), mated, log10_prior_odds=[0.0])
    assert e[0] == pytest.approx(v.cllr(true_lr(d), mated), rel=1e-9)


def test_pav_fit_is_monotone_and_elub_bounds_the_extremes():
    rng = np.random.default_rng(2)
    d = np.concatenate([rng.normal(0.5, 0.3, 300), rng.normal(2.0, 0.3, 300)])
    mated = np.arange(600) < 300
    fit = lrmod.fit_lr(d, mated, method="pav")
    grid = np.linspace(-1, 4, 500)
    raw, bounded = fit.raw_lr(grid), fit.lr(grid)
    assert np.all(np.diff(np.clip(raw, 0, 1e300)) <= 1e-12)  # non-increasing in distance
    assert raw.max() == np.inf and raw.min() == 0.0  # PAV alone: certainty at the separated ends
    lo, hi = fit.bounds
    assert 0 < lo < 1 < hi < np.inf and bounded.max() == hi and bounded.min() == lo


def test_elub_of_perfectly_separated_pairs_by_hand():
    # n mated pairs at LR L and n non-mated at 1/L (L huge), one misleading pair added to each class. For 1 <= t < L:
    # P(miss) = 1/(n+1), P(false accept) = 1/(n+1), expected cost (1 + t)/(n+1), the neutral LR's is 1: the system
    # is worse once t > n, so the upper bound is n. Below 1 the neutral cost is t and the system's (1 + t)/(n+1):
    # worse once t < 1/n, so the lower bound is 1/n (both to the 0.01 natural-log grid step).
    for n in (5, 50, 400):
        lrs = np.concatenate([np.full(n, 1e6), np.full(n, 1e-6)])
        y = np.arange(2 * n) < n
        lo, hi = lrmod.elub_bounds(lrs, y)
        assert hi == pytest.approx(n, rel=0.011) and lo == pytest.approx(1 / n, rel=0.011)
        # weights count as pairs: 2n pairs of weight 1/2 support what n pairs do
        lo2, hi2 = lrmod.elub_bounds(np.repeat(lrs, 2), np.repeat(y, 2), np.full(4 * n, 0.5))
        assert (lo2, hi2) == pytest.approx((lo, hi), rel=1e-12)
    # one pair each supports nothing: both bounds are 1
    assert lrmod.elub_bounds(np.array([100.0, 0.01]), np.array([True, False])) == pytest.approx((1.0, 1.0))


def test_identity_pair_weights_make_identities_count_equally():
    # identity 0 has 6 sequences, identity 1 has 2, identity 2 has 3
    labels = np.array(["a"] * 6 + ["b"] * 2 + ["c"] * 3)
    feats = np.random.default_rng(4).normal(size=(11, 8, 2)).astype(np.float32)
    p = lrmod.pairs_from_embeddings(feats, labels, "euc")
    assert len(p) == 55 and p.mated.sum() == 15 + 1 + 3
    # every identity's mated pairs weigh the same in total; every identity pair's non-mated pairs too
    tot = {k: p.weight[p.mated & (p.id_a == i)].sum() for i, k in enumerate("abc")}
    assert tot["a"] == pytest.approx(tot["b"]) == pytest.approx(tot["c"])
    nm = {(i, j): p.weight[~p.mated & (p.id_a == i) & (p.id_b == j)].sum() for i, j in ((0, 1), (0, 2), (1, 2))}
    assert len(set(np.round(list(nm.values()), 9))) == 1
    assert p.weight[p.mated].mean() == pytest.approx(1.0) and p.weight[~p.mated].mean() == pytest.approx(1.0)
    # the distances are OpenGait's: mean over parts of the Euclidean distance, by a plain loop
    k = 7
    i, j = p.seq_a[k], p.seq_b[k]
    tol = float32_distance_bound(feats[i:i + 1], feats[j:j + 1])[0, 0]
    assert p.distance[k] == pytest.approx(np.mean(np.sqrt(((feats[i] - feats[j]) ** 2).sum(0))), abs=tol)


def test_cross_validation_never_fits_on_a_held_out_identity():
    rng = np.random.default_rng(5)
    labels = np.repeat([f"{i:03d}" for i in range(8)], 5)
    centers = rng.normal(size=(8, 16, 1)) * 2
    feats = (centers[np.repeat(np.arange(8), 5)] + rng.normal(size=(40, 16, 1))).astype(np.float32)
    p = lrmod.pairs_from_embeddings(feats, labels, "euc")
    lrs, how = lrmod.cross_validated_lrs(p, "logistic", k=4)
    assert np.all(np.isfinite(lrs)) and how["fits"] == 4 * 5 // 2
    assert set(how["folds"].values()) == {0, 1, 2, 3}
    res = v.validate(lrs, p.mated, p.weight)
    assert res["cllr"] < 1 and res["eer"] < 0.5  # real signal in these features
    with pytest.raises(ValueError, match="at least 4 identities"):
        lrmod.cross_validated_lrs(p.subset(p.id_b < 3), "logistic")


def test_model_file_is_strict_json_and_refuses_another_checkpoint(tmp_path):
    fit = LRFit("pav", {"d": [0.0, 1.0], "p": [1.0, 0.0]}, (0.01, math.inf))
    path = write_lr_model(tmp_path / "m.json", {"checkpoint": "x.pt", "checkpoint_sha256": "ab" * 32,
                                               "metric": "euc", "embedding": "embed_1", "fit": fit.to_json()})
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    m = read_lr_model(path)
    assert m.fit.bounds == (0.01, math.inf) and m.lr(0.5) == pytest.approx(1.0) and m.lr(5.0) == 0.01
    m.check_for("ab" * 32, "euc", "embed_1")
    with pytest.raises(UserError, match="another checkpoint"):
        m.check_for("cd" * 32, "euc")
    with pytest.raises(UserError, match="cos"):
        m.check_for("ab" * 32, "cos")
    (tmp_path / "bad.json").write_text('{"kind": "allinone-lr-model"}')
    with pytest.raises(UserError, match="damaged"):
        read_lr_model(tmp_path / "bad.json")


# the ENFSI (2015) bands, each from its lower edge (inclusive) to the next: below 2 no support (ENFSI's weak
# support starts at 2), then 2, 10, 100, 1,000, 10,000 and 1,000,000; 1/LR the same for 'different people'
EDGES = [(2.0, "no support", "weak support"), (10.0, "weak support", "moderate support"),
         (100.0, "moderate support", "moderately strong support"),
         (1_000.0, "moderately strong support", "strong support"), (10_000.0, "strong support", "very strong support"),
         (1_000_000.0, "very strong support", "extremely strong support")]


@pytest.mark.parametrize("edge, below, above", EDGES)
def test_verbal_scale_every_band_edge_both_sides_both_directions(edge, below, above):
    def band(lr):
        return verbal(lr).split(" for ")[0]
    assert band(edge) == above and "'same person'" in verbal(edge)
    assert band(math.nextafter(edge, 0)) == below
    assert band(1 / edge) == above and "'different people'" in verbal(1 / edge)
    assert band(math.nextafter(1 / edge, 1)) == below


def test_verbal_scale_no_support_band():
    assert "do not support one proposition over the other" in verbal(1.0)
    for lr in (math.nextafter(1.0, 2), 1.5, math.nextafter(2.0, 0), math.nextafter(1.0, 0), 1 / 1.5, 0.5000001):
        assert verbal(lr).startswith("no support"), lr
    for lr in (2.0, 0.5):
        assert verbal(lr).startswith("weak support"), lr
    assert "extremely strong" in verbal(1e300) and "extremely strong" in verbal(1e-300)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            verbal(bad)


def test_calibrate_lr_refuses_a_folder_that_is_not_an_evaluation(tmp_path):
    from tests.test_cli import _assert_user_error, run_main
    res = run_main("calibrate", "--lr", "--evaluation", str(tmp_path), "--output", str(tmp_path / "o"))
    _assert_user_error(res, str(tmp_path), "not an evaluate output folder")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_evaluate_lr_model_on_the_same_people_is_not_called_held_out(tmp_path):
    # a model fitted on people A-F; an evaluation of the same people with one sequence fewer (other embeddings, so
    # the file hashes differ) is in-sample, and says so; one of other people G-L is held out
    from allinone.commands.calibrate_lr import evaluation_lr_outputs
    from allinone.evaluate.lr import pairs_from_embeddings
    rng = np.random.default_rng(0)
    names = list("ABCDEF")
    labels = np.repeat(names, 4)
    feats = (rng.normal(0, 1, (6, 1, 4, 2))[np.repeat(np.arange(6), 4)][:, 0]
             + rng.normal(0, 0.3, (24, 4, 2))).astype(np.float32)
    pairs = pairs_from_embeddings(feats, labels, "euc")
    fit = lrmod.fit_lr(pairs.distance, pairs.mated, pairs.weight, "logistic")
    path = write_lr_model(tmp_path / "m.json", {"checkpoint_sha256": "ab" * 32, "metric": "euc",
                                                "fit": fit.to_json(), "data": {"name": "e", "dataset": "/d/root",
                                                                               "identity_labels": names}})
    s = evaluation_lr_outputs(tmp_path, path, feats[1:], labels[1:], "euc", "ab" * 32, "embed_1", "f" * 64, "/d/root")
    assert s["model"]["held_out"] is False and s["model"]["shared_identities"] == 6
    assert "not held out" in s["model"]["note"] and s["model"]["same_dataset_root"] is True
    other = np.repeat(list("GHIJKL"), 4)
    s = evaluation_lr_outputs(tmp_path, path, feats, other, "euc", "ab" * 32, "embed_1", "f" * 64, "/d/other")
    assert s["model"]["held_out"] is True and s["model"]["note"] is None


@pytest.mark.parametrize("noise", [0.5, 1.5])
def test_elub_bounds_are_true_of_new_people(noise):
    # 10 people x 20 sequences, each a Gaussian point per person plus Gaussian noise (DIM dimensions): a mated
    # distance² / (2 noise²) and a non-mated distance² / (2 (1 + noise²)) are chi² with DIM degrees of freedom, so
    # the true LR of the region where the model sits at its upper bound (distances up to d_U) is
    # P(d <= d_U | same) / P(d <= d_U | different), for people not in the data; likewise at the lower bound. The
    # bound claims the data support that value: the region's true LR must reach it. Counted by pairs, PAV's bounds
    # (hundreds) overstated the top in 60% (noise 0.5) and 87% (1.5) of datasets; counted in people, in at most 5%
    from scipy.stats import chi2
    dim, people, per = 8, 10, 20
    rng = np.random.default_rng(int(noise * 10))
    trials, over = 20, 0
    for _ in range(trials):
        mu = rng.normal(0, 1, (people, dim))
        x = (mu[:, None, :] + rng.normal(0, noise, (people, per, dim))).reshape(-1, dim, 1).astype(np.float32)
        pairs = lrmod.pairs_from_embeddings(x, np.repeat([f"{i:03d}" for i in range(people)], per), "euc")
        assert pairs.units() == (10, 5)  # ten people, five disjoint pairs of them
        fit = lrmod.fit_lr(pairs.distance, pairs.mated, pairs.weight, "pav", units=pairs.units())
        lo, hi = fit.bounds
        grid = np.linspace(0, pairs.distance.max() * 1.5, 20001)
        lr = fit.lr(grid)
        same, diff = 2 * noise ** 2, 2 * (1 + noise ** 2)
        if hi > 1:
            d_u = grid[lr >= hi * (1 - 1e-9)].max()
            over += chi2.cdf(d_u ** 2 / same, dim) / chi2.cdf(d_u ** 2 / diff, dim) < hi
        if lo < 1:
            d_l = grid[lr <= lo * (1 + 1e-9)].min()
            over += chi2.sf(d_l ** 2 / same, dim) / chi2.sf(d_l ** 2 / diff, dim) > lo
    assert over / (2 * trials) <= 0.05
