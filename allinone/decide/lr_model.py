"""Likelihood-ratio model files: a gait distance turned into a likelihood ratio (LR), bounded, with its verbal
equivalent.

``python main.py calibrate --lr`` fits one (allinone/evaluate/lr.py) and writes it as strict JSON; ``compare`` and
runs given ``--lr-model FILE`` read it here and apply it. The file is tied to one checkpoint (sha256), metric and
embedding: one made for another is refused by name.

LR = P(distance | same person) / P(distance | different persons). Two fits:

- ``logistic``: ln LR = a + b·d (logistic-regression calibration with balanced classes, so the intercept is a log
  likelihood ratio, not a posterior log odds).
- ``pav``: the pool-adjacent-violators (isotonic) fit of P(same | d), non-increasing in d, linearly interpolated
  between its steps and clipped outside them; LR = p / (1 − p) (classes balanced).

Both are clipped to the model's bounds (ELUB, Vergeer et al. 2016), so no LR exceeds what the fitted data support.

The verbal scale is the ENFSI Guideline for Evaluative Reporting in Forensic Science (2015): an LR of 2–10 gives weak
support, 10–100 moderate, 100–1,000 moderately strong, 1,000–10,000 strong, 10,000–1,000,000 very strong and above
1,000,000 extremely strong support to one proposition over the other; below 1 the same bands with 1/LR support the
other proposition.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allinone.errors import UserError, read_json
from allinone.io.run_folder import temp_beside

KIND = "allinone-lr-model"
METHODS = ("logistic", "pav")
PROPOSITIONS = ("the two walkers are the same person", "the two walkers are different people")

# ENFSI (2015) verbal equivalents: (upper LR of the band, words); LR >= 1 side, applied to 1/LR below 1
VERBAL_SCALE = ((1.0, "no support for either proposition"), (10.0, "weak support"), (100.0, "moderate support"),
                (1_000.0, "moderately strong support"), (10_000.0, "strong support"),
                (1_000_000.0, "very strong support"), (math.inf, "extremely strong support"))
VERBAL_SOURCE = "ENFSI Guideline for Evaluative Reporting in Forensic Science (2015), verbal equivalents of the LR"


def verbal(lr: float) -> str:
    """The ENFSI (2015) verbal equivalent of ``lr``, naming the proposition it supports."""
    if not (lr > 0) or not math.isfinite(lr):
        raise ValueError(f"an LR must be finite and > 0, got {lr}")
    if abs(math.log10(lr)) < 1e-12:
        return "the findings do not support one proposition over the other (LR 1)"
    x, side = (lr, "same person") if lr > 1 else (1 / lr, "different people")
    for upper, words in VERBAL_SCALE[1:]:
        if x <= upper:
            return f"{words} for '{side}' over the alternative"
    raise AssertionError(lr)


@dataclass(frozen=True)
class LRFit:
    """A fitted score-to-LR model. ``params``: logistic {a, b} (natural log LR = a + b·d); pav {d, p} (the isotonic
    steps: distances increasing, P(same) non-increasing). ``bounds``: (lower LR, upper LR)."""

    method: str
    params: dict
    bounds: tuple[float, float] = (0.0, math.inf)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "logistic" and not {"a", "b"} <= set(self.params):
            raise ValueError("a logistic fit needs a and b")
        if self.method == "pav":
            d, p = np.asarray(self.params.get("d", []), float), np.asarray(self.params.get("p", []), float)
            if d.ndim != 1 or d.shape != p.shape or len(d) < 1 or np.any(np.diff(d) < 0) or np.any(np.diff(p) > 1e-12):
                raise ValueError("a pav fit needs increasing distances d and non-increasing probabilities p")
        lo, hi = self.bounds
        if not 0 <= lo <= 1 <= hi:
            raise ValueError(f"bounds must satisfy 0 <= lower <= 1 <= upper, got {self.bounds}")

    def raw_lr(self, d) -> np.ndarray:
        """The unbounded LR of distances ``d`` (0 and inf possible for pav)."""
        d = np.asarray(d, dtype=np.float64)
        if self.method == "logistic":
            with np.errstate(over="ignore"):
                return np.exp(self.params["a"] + self.params["b"] * d)
        p = np.interp(d, np.asarray(self.params["d"], float), np.asarray(self.params["p"], float))
        with np.errstate(divide="ignore"):
            return p / (1 - p)

    def lr(self, d) -> np.ndarray:
        """The LR of distances ``d``, within the bounds."""
        return np.clip(self.raw_lr(d), self.bounds[0], self.bounds[1])

    def to_json(self) -> dict:
        return {"method": self.method, "parameters": self.params,
                "bounds": {"lower_lr": self.bounds[0], "upper_lr": self.bounds[1], **self.extra}}


@dataclass(frozen=True)
class LRModel:
    """An LR model file as read: the fit and what it is for."""

    path: Path
    fit: LRFit
    record: dict

    @property
    def checkpoint_sha256(self) -> str:
        return self.record["checkpoint_sha256"]

    @property
    def metric(self) -> str:
        return self.record["metric"]

    def lr(self, distance: float) -> float:
        return float(self.fit.lr(np.array([distance]))[0])

    def check_for(self, checkpoint_sha256: str | None, metric: str | None, embedding: str | None = None) -> None:
        """Refuse (by file name) use with another checkpoint, metric or embedding than the one it was fitted for."""
        rec = self.record
        if checkpoint_sha256 and rec["checkpoint_sha256"] != checkpoint_sha256:
            raise UserError(f"LR model made for another checkpoint ({rec.get('checkpoint', '?')}, sha256 "
                            f"{rec['checkpoint_sha256'][:12]}…), not this one ({checkpoint_sha256[:12]}…)", self.path)
        if metric and rec["metric"] != metric:
            raise UserError(f"LR model made for the {rec['metric']} metric, not {metric}", self.path)
        if embedding and rec.get("embedding", "embed_1") != embedding:
            raise UserError(f"LR model made for {rec.get('embedding')}, not {embedding}", self.path)


def add_lrs(rows: list[dict], model: LRModel) -> dict:
    """Give each run.json match row with a distance its ``lr`` and ``lr_verbal``; returns run.json's "lr_model"."""
    from allinone.io.run_folder import sha256_path
    for r in rows:
        if r.get("distance") is not None:
            lr = model.lr(float(r["distance"]))
            r["lr"], r["lr_verbal"] = float(f"{lr:.6g}"), verbal(lr)
    b = model.record["fit"]["bounds"]
    return {"file": str(model.path), "sha256": sha256_path(model.path), "method": model.fit.method,
            "bounds": [b["lower_lr"], b["upper_lr"]], "fitted_on": model.record.get("data", {}).get("name"),
            "verbal_scale": VERBAL_SOURCE,
            "note": "the LR is of the distance to the identity in the row (the matched one, or the nearest)"}


def _finite(x):
    """JSON-safe: inf written as the string "inf" (strict JSON has no Infinity), NaN refused."""
    if isinstance(x, float):
        if math.isnan(x):
            raise ValueError("NaN in an LR model record")
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x


def write_lr_model(path: Path, record: dict) -> Path:
    """Write ``record`` (with its "fit") as strict JSON, atomically."""
    text = json.dumps(_finite({"kind": KIND, "version": 1, **record}), indent=2, allow_nan=False)
    tmp = temp_beside(path)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _num(x) -> float:
    return math.inf if x == "inf" else float(x)


def read_lr_model(path: str | Path) -> LRModel:
    path = Path(path)
    rec = read_json(path, "LR model")
    if not isinstance(rec, dict) or rec.get("kind") != KIND:
        raise UserError("not an LR model written by python main.py calibrate --lr", path)
    try:
        f = rec["fit"]
        b = f["bounds"]
        fit = LRFit(f["method"], f["parameters"], (_num(b["lower_lr"]), _num(b["upper_lr"])))
        str(rec["checkpoint_sha256"]), str(rec["metric"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"LR model file is damaged ({exc})", path) from None
    return LRModel(path, fit, rec)


__all__ = ["add_lrs", "KIND", "LRFit", "LRModel", "METHODS", "PROPOSITIONS", "VERBAL_SOURCE", "read_lr_model", "verbal",
           "write_lr_model"]
