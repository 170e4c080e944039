"""The evaluation's pictures: CMC curves, ROC curves on a log FAR axis, genuine/impostor distance histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def cmc_plot(cmc: dict[str, list[float]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=110)
    for cond, curve in cmc.items():
        ranks = np.arange(1, len(curve) + 1)
        ax.plot(ranks, np.asarray(curve) * 100, marker="o", ms=3, label=cond)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_title("CMC (all gallery views)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def roc_plot(pairs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """pairs: condition → (genuine distances, impostor distances)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=110)
    for cond, (gen, imp) in pairs.items():
        if not len(gen) or not len(imp):
            continue
        ts = np.unique(np.concatenate([gen, imp]))
        imp_s, gen_s = np.sort(imp), np.sort(gen)
        far = np.searchsorted(imp_s, ts, side="right") / len(imp_s)
        tar = np.searchsorted(gen_s, ts, side="right") / len(gen_s)
        keep = far > 0
        ax.plot(far[keep], tar[keep], label=cond)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate (log)")
    ax.set_ylabel("true accept rate")
    ax.set_title("ROC (verification)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def histogram_plot(pairs: dict[str, tuple[np.ndarray, np.ndarray]], thresholds: dict[str, float | None],
                   path: Path) -> None:
    """Per condition, genuine and impostor distance histograms with the threshold marked."""
    plt = _plt()
    n = max(1, len(pairs))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), dpi=110, squeeze=False)
    for ax, (cond, (gen, imp)) in zip(axes[0], pairs.items()):
        both = np.concatenate([gen, imp]) if len(gen) + len(imp) else np.zeros(1)
        bins = np.linspace(both.min(), both.max() + 1e-12, 40)
        ax.hist(imp, bins=bins, alpha=0.6, density=True, label=f"impostor ({len(imp)})", color="tab:red")
        ax.hist(gen, bins=bins, alpha=0.6, density=True, label=f"genuine ({len(gen)})", color="tab:green")
        t = thresholds.get(cond)
        if t is not None:
            ax.axvline(t, color="k", ls="--", label=f"threshold {t:.4g} (FPIR 0.01)")
        ax.set_title(cond)
        ax.set_xlabel("distance")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
