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

The verbal scale is the ENFSI Guideline for Evaluative Reporting in Forensic Science (2015): an LR of 2–10 gives
weak support, 10–100 moderate, 100–1,000 moderately strong, 1,000–10,000 strong, 10,000–1,000,000 very strong and
from 1,000,000 extremely strong support to one proposition over the other. Between 1 and 2 the findings give no support
worth the name (ENFSI's weak support starts at 2): that is a band of its own, "no support". Each band holds from
its lower edge (inclusive) to the next edge (exclusive); below 1 the same bands with 1/LR support the other
proposition (the edges compared as LR <= 1/edge, exact for these edges), and an LR of exactly 1 supports neither.
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
# why a run (a 1:N search) carries no LR: the model is fitted on 1:1 comparisons, and the nearest of N identities to a
# stranger is much closer than one different person is (README, "Evidence for an examiner")
NOT_FOR_SEARCH = ("--lr-model: a likelihood ratio belongs to one designated comparison, not to a search: a stranger's "
                  "nearest of N gallery identities looks far more alike than one different person, so a 1:1 model's "
                  "LR would overstate it; compare the pair with python main.py compare QUESTIONED REFERENCE "
                  "--lr-model FILE")
METHODS = ("logistic", "pav")
PROPOSITIONS = ("the two walkers are the same person", "the two walkers are different people")

# ENFSI (2015) verbal equivalents: (lower edge of the band, inclusive; words), LR >= 1 side, 1/LR below 1
VERBAL_SCALE = ((1.0, "no support"), (2.0, "weak support"), (10.0, "moderate support"),
                (100.0, "moderately strong support"), (1_000.0, "strong support"), (10_000.0, "very strong support"),
                (1_000_000.0, "extremely strong support"))
VERBAL_SOURCE = ("ENFSI Guideline for Evaluative Reporting in Forensic Science (2015), verbal equivalents of the LR; "
                 "below 2, no support")


def verbal(lr: float) -> str:
    """The verbal equivalent of ``lr`` (module doc), naming the proposition it supports."""
    if not (lr > 0) or not math.isfinite(lr):
        raise ValueError(f"an LR must be finite and > 0, got {lr}")
    if lr == 1.0:
        return "the findings do not support one proposition over the other (LR 1)"
    side = "same person" if lr > 1 else "different people"
    words = VERBAL_SCALE[0][1]
    for edge, name in VERBAL_SCALE[1:]:
        if (lr >= edge) if lr > 1 else (lr <= 1.0 / edge):
            words = name
    return f"{words} for '{side}' over the alternative"


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


def checkpoint_validation(record: dict, checkpoint_sha256: str, config=None) -> dict:
    """Whether an LR model file's record validates the gait checkpoint ``checkpoint_sha256`` (EvidenceConfig): a
    held-out validation of that very checkpoint, by identity, over enough people, with a held-out Cllr below the
    bar. Returns {"validated", "reason", and the figures and conditions it rests on}."""
    from allinone.config import EvidenceConfig
    c = config or EvidenceConfig()
    val, data = record.get("validation") or {}, record.get("data") or {}
    cv = val.get("cross_validation") or {}
    folds = cv.get("folds") if isinstance(cv.get("folds"), dict) else {}
    people = len(folds) or 0
    cllr = val.get("cllr")
    facts = {"lr_model_checkpoint_sha256": record.get("checkpoint_sha256"), "held_out_identities": people,
             "cllr": cllr, "eer": val.get("eer"), "scheme": cv.get("scheme"), "dataset": data.get("dataset"),
             "evaluation": data.get("name"), "min_identities": c.min_identities, "max_cllr": c.max_cllr}
    if record.get("checkpoint_sha256") != checkpoint_sha256:
        why = "the LR model's validation is of another checkpoint"
    elif not cv or not isinstance(cllr, (int, float)) or isinstance(cllr, bool):
        why = "the LR model file records no held-out validation of it"
    elif people < c.min_identities:
        why = (f"its held-out validation covers {people} people, fewer than the {c.min_identities} needed to show "
               "how its LRs behave for people not in the data")
    elif not cllr < c.max_cllr:
        why = f"its held-out Cllr {cllr:.4g} is not below {c.max_cllr:g}"
    else:
        return {"validated": True, "reason": f"held-out Cllr {cllr:.4g} (below {c.max_cllr:g}) over {people} people "
                                             f"of {data.get('dataset') or data.get('name')}, {cv.get('scheme')}",
                **facts}
    return {"validated": False, "reason": why, **facts}


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


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _counts(x) -> bool:
    return isinstance(x, dict) and all(isinstance(k, str) and _whole(v) for k, v in x.items())


# the data block as calibrate --lr writes it: what each key must hold (a check per key; absent keys are allowed)
DATA_FIELDS = {
    "name": lambda x: isinstance(x, str), "evaluation": lambda x: isinstance(x, str),
    "dataset": lambda x: x is None or isinstance(x, str), "protocol": lambda x: x is None or isinstance(x, str),
    "embeddings_sha256": lambda x: isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x),
    "pairs": lambda x: isinstance(x, dict) and set(x) == {"mated", "non_mated"} and all(map(_whole, x.values())),
    "distance_range": lambda x: isinstance(x, list) and len(x) == 2 and all(map(_number, x)) and x[0] <= x[1],
    "weighting": lambda x: isinstance(x, str), "identities": _whole, "sequences": _whole,
    "types": _counts, "views": _counts,
    "identity_labels": lambda x: isinstance(x, list) and all(isinstance(v, str) for v in x),
}
VALIDATION_NUMBERS = ("cllr", "cllr_min", "cllr_cal", "eer")


def check_record(rec: dict, path: Path) -> None:
    """A UserError naming the file and key unless the model's data and validation blocks hold what calibrate --lr
    writes (numbers where numbers go, text where text goes): a report reads them, so nothing else may come in."""
    data = rec.get("data", {})
    if not isinstance(data, dict):
        raise UserError("LR model file: data must be an object", path)
    for key, ok in DATA_FIELDS.items():
        if key in data and not ok(data[key]):
            raise UserError(f"LR model file: data.{key} is not what calibrate --lr writes ({data[key]!r:.60})", path)
    val = rec.get("validation", {})
    if not isinstance(val, dict):
        raise UserError("LR model file: validation must be an object", path)
    for key in VALIDATION_NUMBERS:
        if val.get(key) is not None and not _number(val[key]):
            raise UserError(f"LR model file: validation.{key} must be a number ({val[key]!r:.60})", path)
    mis = val.get("misleading", {})
    if not isinstance(mis, dict) or not all(_number(v) for v in mis.values()):
        raise UserError("LR model file: validation.misleading must hold numbers", path)


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
    check_record(rec, path)
    return LRModel(path, fit, rec)


__all__ = ["check_record", "checkpoint_validation", "KIND", "LRFit", "LRModel", "METHODS", "NOT_FOR_SEARCH",
           "PROPOSITIONS", "VERBAL_SOURCE", "read_lr_model", "verbal", "write_lr_model"]
