"""The forensic field's validation figures of a set of LRs with known ground truth (weighted pairs).

- Cllr (Brümmer & du Preez 2006): ½ (mean over mated of log2(1 + 1/LR) + mean over non-mated of log2(1 + LR));
  0 for a perfect system, 1 for one that always says LR = 1.
- Cllr_min: the Cllr after the LRs are replaced by the PAV (pool-adjacent-violators) transform of themselves, the
  best any monotone recalibration can do: it measures discrimination. Cllr_cal = Cllr − Cllr_min is the calibration
  loss.
- ECE (empirical cross-entropy, Ramos & Gonzalez-Rodriguez 2008; Ramos et al. 2013): for a prior log10 odds o, the
  mean information loss −P(Hp) mean_mated log2 P(Hp|LR) − P(Hd) mean_non-mated log2 P(Hd|LR); at o = 0 it is Cllr.
- Tippett plot: the proportion of mated and of non-mated pairs whose LR is at least x, against log10 x.
- EER of the LRs (the rate where false matches equal false non-matches as the LR threshold moves).

Every mean is weighted by the pairs' weights (evaluate/lr.py) so each identity pair counts once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _wmean(x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(x * w) / np.sum(w))


def _split(lrs, mated, weight):
    lrs = np.asarray(lrs, dtype=np.float64)
    mated = np.asarray(mated, dtype=bool)
    w = np.ones(len(lrs)) if weight is None else np.asarray(weight, dtype=np.float64)
    if np.any(lrs < 0) or np.any(np.isnan(lrs)):
        raise ValueError("LRs must be >= 0")
    if mated.all() or not mated.any():
        raise ValueError("need mated and non-mated LRs")
    return lrs, mated, w


def cllr(lrs, mated, weight=None) -> float:
    lrs, mated, w = _split(lrs, mated, weight)
    with np.errstate(divide="ignore", over="ignore"):
        cm = np.log2(1 + 1 / lrs[mated])
        cn = np.log2(1 + lrs[~mated])
    return 0.5 * (_wmean(cm, w[mated]) + _wmean(cn, w[~mated]))


def pav_lrs(lrs, mated, weight=None) -> np.ndarray:
    """The PAV transform of ``lrs``: the isotonic (non-decreasing in LR) fit of P(mated), classes balanced, as
    odds. Ties in LR share one value."""
    from sklearn.isotonic import IsotonicRegression
    lrs, mated, w = _split(lrs, mated, weight)
    y = mated.astype(float)
    bw = w.copy()
    for c in (True, False):
        bw[mated == c] *= 0.5 / w[mated == c].sum()
    with np.errstate(divide="ignore"):
        x = np.log(lrs)
    x = np.clip(x, -1e300, 1e300)
    p = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0).fit_transform(x, y, sample_weight=bw)
    with np.errstate(divide="ignore"):
        return p / (1 - p)


def cllr_min(lrs, mated, weight=None) -> float:
    return cllr(pav_lrs(lrs, mated, weight), mated, weight)


def eer(lrs, mated, weight=None) -> float:
    """Equal error rate of deciding "mated" when LR >= t, over every t; where the two rates cross between two
    thresholds, their mean at the closest one."""
    lrs, mated, w = _split(lrs, mated, weight)
    t = np.unique(lrs)
    ts = np.concatenate([t, [np.inf]])

    def frac_ge(c):
        x, wx = lrs[mated == c], w[mated == c]
        o = np.argsort(x)
        x, cw = x[o], np.concatenate([[0.0], np.cumsum(wx[o])])
        return (cw[-1] - cw[np.searchsorted(x, ts, side="left")]) / cw[-1]

    fnmr = 1 - frac_ge(True)
    fmr = frac_ge(False)
    i = int(np.argmin(np.abs(fnmr - fmr)))
    return float((fnmr[i] + fmr[i]) / 2)


def ece_curve(lrs, mated, weight=None, log10_prior_odds=None) -> tuple[np.ndarray, np.ndarray]:
    lrs, mated, w = _split(lrs, mated, weight)
    o = np.linspace(-2.5, 2.5, 101) if log10_prior_odds is None else np.asarray(log10_prior_odds, float)
    prior = 10.0 ** o
    p_hp = prior / (1 + prior)
    out = np.empty(len(o))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for i, (po, ph) in enumerate(zip(prior, p_hp)):
            post_m = lrs[mated] * po  # posterior odds of the mated pairs
            post_n = lrs[~mated] * po
            loss_m = np.log2(1 + 1 / post_m)  # -log2 P(Hp | LR)
            loss_n = np.log2(1 + post_n)  # -log2 P(Hd | LR)
            out[i] = ph * _wmean(loss_m, w[mated]) + (1 - ph) * _wmean(loss_n, w[~mated])
    return o, out


def tippett(lrs, mated, weight=None, grid=None) -> dict:
    """Proportions (weighted) of mated and non-mated LRs >= 10**x over a log10 grid."""
    lrs, mated, w = _split(lrs, mated, weight)
    with np.errstate(divide="ignore"):
        llr = np.log10(lrs)
    if grid is None:
        fin = llr[np.isfinite(llr)]
        lo, hi = (float(fin.min()), float(fin.max())) if len(fin) else (-1.0, 1.0)
        grid = np.linspace(min(lo, -1.0) - 0.25, max(hi, 1.0) + 0.25, 301)
    res = {"log10_lr": [round(float(g), 6) for g in grid]}
    for key, c in (("mated_ge", True), ("non_mated_ge", False)):
        x, wx = llr[mated == c], w[mated == c]
        res[key] = [round(float(np.sum(wx[x >= g]) / np.sum(wx)), 6) for g in grid]
    return res


def validate(lrs, mated, weight=None) -> dict:
    """Cllr, Cllr_min, Cllr_cal, EER, rates of misleading evidence and the LR range, as plain floats."""
    lrs, mated, w = _split(lrs, mated, weight)
    c, cmin = cllr(lrs, mated, w), cllr_min(lrs, mated, w)
    return {"cllr": c, "cllr_min": cmin, "cllr_cal": c - cmin, "eer": eer(lrs, mated, w),
            "misleading": {"mated_lr_below_1": _wmean(lrs[mated] < 1, w[mated]),
                           "non_mated_lr_above_1": _wmean(lrs[~mated] > 1, w[~mated])},
            "log10_lr_range": [float(np.log10(max(lrs.min(), 1e-300))), float(np.log10(max(lrs.max(), 1e-300)))],
            "pairs": {"mated": int(mated.sum()), "non_mated": int((~mated).sum())}}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def tippett_plot(curves: dict, path: Path, case_log10_lr: float | None = None, title: str = "") -> None:
    """A Tippett plot from ``tippett()``'s curves; a vertical line at the case's LR when given."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    x = curves["log10_lr"]
    ax.plot(x, curves["mated_ge"], color="#1a7f37", label="mated pairs (same person): P(LR ≥ x)")
    ax.plot(x, curves["non_mated_ge"], color="#b42318", label="non-mated pairs (different people): P(LR ≥ x)")
    ax.axvline(0, color="#888", lw=0.8, ls=":")
    if case_log10_lr is not None:
        ax.axvline(case_log10_lr, color="#1d1d1f", lw=1.6, ls="--", label=f"this comparison: log10 LR = "
                                                                          f"{case_log10_lr:.2f}")
    ax.set_xlabel("log10 LR (x)")
    ax.set_ylabel("proportion of pairs with LR ≥ x")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, ls=":")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "Tippett plot (held-out LRs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def ece_plot(lrs, mated, weight, path: Path, title: str = "") -> None:
    """ECE against prior log10 odds: the system's LRs, after PAV (the minimum) and the uninformative LR = 1."""
    plt = _plt()
    o, sys_ = ece_curve(lrs, mated, weight)
    _, best = ece_curve(pav_lrs(lrs, mated, weight), mated, weight)
    _, neutral = ece_curve(np.ones(len(lrs)), mated, weight)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(o, sys_, color="#b42318", label="LRs (held out)")
    ax.plot(o, best, color="#1f4fd8", ls="--", label="after PAV (calibration loss removed)")
    ax.plot(o, neutral, color="#555", ls=":", label="LR = 1 always (no information)")
    ax.axvline(0, color="#888", lw=0.8, ls=":")
    ax.set_xlabel("prior log10 odds (same person)")
    ax.set_ylabel("empirical cross-entropy (bits)")
    top = float(np.nanmax(np.where(np.isfinite(sys_), sys_, np.nan), initial=1.0))
    ax.set_ylim(0, max(1.05, min(top, 3.0) * 1.05))
    ax.grid(True, ls=":")
    ax.legend(fontsize=8)
    ax.set_title(title or "ECE plot", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["cllr", "cllr_min", "ece_curve", "ece_plot", "eer", "pav_lrs", "tippett", "tippett_plot", "validate"]
