"""Calibration files: the impostor distance distribution of a labelled dataset, tied to one checkpoint and metric
(and embedding), so that a run with a gallery of any size can choose its threshold for a target FPIR from it.

Version 2 (``impostor``): ``count`` impostor pairs, ``independent`` of them counted in people (``independent_unit``
"people": disjoint pairs of the dataset's people, decide/fpir.py; a file without it counted sequences, which claims
support the data do not have, and is refused),
``lowest``: the smallest distances, sorted and exact (up to LOWEST of them), ``quantiles``: ``p`` and ``d``, the
distribution at every percent, for distances beyond the stored ones. It also keeps the threshold for the target
FPIR at the evaluation's own gallery size, for reference. Version 1 files (a threshold only) still load, with a
warning: their number is used as it is and its FPIR for this gallery is unknown.

``python main.py calibrate`` writes one (by default beside the checkpoint, as ``<checkpoint stem>.calibration.json``);
a run or rematch takes it with ``--calibration FILE`` or finds the one beside its checkpoint. A file made for
another checkpoint (sha256) or metric is refused by name, and so is one made from another segmenter's silhouettes
(or pose model's keypoints) where the file records them (``inputs``, from ``calibrate --seg-model/--pose-model``).
A file that does not record them (a dataset whose silhouettes came from elsewhere, or an older file) is accepted:
nothing is known to compare.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allinone.decide.fpir import Source
from allinone.errors import UserError, read_json
from allinone.decide.threshold import METRIC_RANGE, check_threshold
from allinone.io.run_folder import temp_beside
from allinone.io.input_models import InputModels

log = logging.getLogger(__name__)

KIND = "allinone-calibration"
LOWEST = 20_000
UNIT = "people"


@dataclass(frozen=True)
class Calibration:
    """A calibration file as a run uses it: its impostor distribution (``source``), or for an old file only its
    ``threshold``."""

    source: Source | None
    threshold: float | None
    detail: dict = field(default_factory=dict)


def impostor_record(distances: np.ndarray, independent: int) -> dict:
    """The ``impostor`` field of a calibration file from all impostor distances of a dataset."""
    d = np.sort(np.asarray(distances, np.float64))
    p = np.linspace(0.0, 1.0, 101)
    return {"count": int(len(d)), "independent": int(independent), "independent_unit": UNIT,
            "lowest": [float(x) for x in d[:LOWEST]],
            "quantiles": {"p": [round(float(x), 2) for x in p],
                          "d": [float(x) for x in np.quantile(d, p)] if len(d) else []}}


def _numbers(value, what: str, path: Path) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                              and math.isfinite(x) and x >= 0 for x in value):
        raise UserError(f"{what} must be a list of finite distances >= 0", path)
    return np.asarray(value, np.float64)


def impostor_source(rec: dict, path: Path) -> Source:
    """The impostor distribution of a version-2 file, every field checked (a UserError naming the file)."""
    imp = rec.get("impostor")
    if not isinstance(imp, dict):
        raise UserError("impostor must be an object", path)
    count, ind = imp.get("count"), imp.get("independent")
    for name, v in (("impostor.count", count), ("impostor.independent", ind)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise UserError(f"{name} must be a whole number >= 0", path)
    if imp.get("independent_unit") != UNIT:
        raise UserError("impostor.independent counts sequences, not people (a file from an older calibrate): its "
                        "FPIR intervals would claim support the data do not have; calibrate again", path)
    lowest = _numbers(imp.get("lowest"), "impostor.lowest", path)
    if len(lowest) > count or ind > count or np.any(np.diff(lowest) < 0):
        raise UserError("impostor.lowest must be sorted and no longer than impostor.count, impostor.independent "
                        "no larger than it", path)
    q = imp.get("quantiles")
    if not isinstance(q, dict):
        raise UserError("impostor.quantiles must be an object with p and d", path)
    p, d = np.asarray(q.get("p") if isinstance(q.get("p"), list) else [None], dtype=object), \
        _numbers(q.get("d"), "impostor.quantiles.d", path)
    try:
        p = p.astype(np.float64)
    except (TypeError, ValueError):
        raise UserError("impostor.quantiles.p must be a list of numbers", path) from None
    if len(p) != len(d) or (len(p) and (np.any(np.diff(p) < 0) or np.any(np.diff(d) < 0) or p[0] < 0 or p[-1] > 1)):
        raise UserError("impostor.quantiles: p and d must be increasing, of one length, p within [0, 1]", path)
    if count > len(lowest) and len(p) < 2:
        raise UserError("impostor.quantiles are needed beyond the stored lowest distances", path)
    return Source("calibration", lowest, count, ind, (p, d) if len(p) >= 2 else None, {"file": str(path)})


def beside(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.calibration.json")


def write_calibration(path: Path, record: dict) -> Path:
    tmp = temp_beside(path)
    tmp.write_text(json.dumps({"kind": KIND, "version": 2, **record}, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def check_calibration_record(rec: dict, path: Path) -> None:
    """A UserError naming the calibration file unless its fields have the types and ranges calibrate writes (a
    hand-edited or damaged file is refused as such, never reported as a bad --threshold). The impostor distribution
    of a version-2 file is checked where it is read (impostor_source)."""
    def bad(why: str) -> UserError:
        return UserError(f"calibration file {why}", path)
    if rec.get("metric") not in METRIC_RANGE:
        raise bad(f"has no known metric ({rec.get('metric')!r}; expected one of {', '.join(METRIC_RANGE)})")
    if not isinstance(rec.get("checkpoint_sha256"), str) or not rec["checkpoint_sha256"]:
        raise bad("has no checkpoint_sha256 (the checkpoint it was made for)")
    value = rec.get("threshold")
    if value is not None or "impostor" not in rec:  # an old file is its threshold; a new one may lack it
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"has a threshold that is not a number ({value!r})")
        lo, hi = METRIC_RANGE[rec["metric"]]
        if not math.isfinite(value) or not lo <= value <= hi:
            raise bad(f"has an impossible threshold {value!r} (a {rec['metric']} distance lies in "
                      f"[{lo:g}, {hi:g}])")
    for key in ("target_fpir", "achieved_fpir", "fnir"):
        x = rec.get(key)
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1):
            raise bad(f"has an impossible {key} {x!r} (a rate lies in [0, 1])")


def read_calibration(path: Path) -> dict:
    rec = read_json(path, "calibration file")
    if not isinstance(rec, dict) or rec.get("kind") != KIND:
        raise UserError("not a calibration file written by python main.py calibrate", path)
    check_calibration_record(rec, path)
    return rec


def load_calibration(path: Path, checkpoint_sha256: str | None, metric: str,
                     embedding: str | None = None, found: str = "given",
                     inputs: InputModels | None = None) -> Calibration:
    """A calibration file, after checking it was made for this checkpoint, metric and embedding, and from the
    silhouettes of the run's segmenter (``inputs``) where the file records its own."""
    rec = read_calibration(path)
    if checkpoint_sha256 and rec.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(f"made for another checkpoint ({rec.get('checkpoint', '?')}, sha256 "
                        f"{str(rec.get('checkpoint_sha256'))[:12]}…), not this one ({checkpoint_sha256[:12]}…)", path)
    if rec.get("metric") != metric:
        raise UserError(f"made for the {rec.get('metric')} metric, not {metric}", path)
    if embedding and rec.get("embedding", "embed_1") != embedding:
        raise UserError(f"made with the {rec.get('embedding', 'embed_1')} embedding, not {embedding}", path)
    why = InputModels.from_json(rec.get("inputs")).mismatch(inputs, "calibrated") if inputs else None
    if why:
        raise UserError(why, path)
    detail = {"file": str(path), "found": found, "dataset": rec.get("dataset"), "protocol": rec.get("protocol")}
    if "impostor" in rec:
        return Calibration(impostor_source(rec, path), None, detail)
    value = rec.get("threshold")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise UserError("threshold must be a number", path)
    try:
        check_threshold(float(value), metric)
    except UserError as exc:
        raise UserError(str(exc), path) from None
    log.warning("%s: an old calibration file (a threshold only, no impostor distribution): its threshold %.4g is "
                "used as it is, and its FPIR for this gallery is unknown; calibrate again to get one", path, value)
    return Calibration(None, float(value), detail)


def find_calibration(explicit: str | None, checkpoint: str | None, checkpoint_sha256: str | None,
                     metric: str, embedding: str | None = None,
                     inputs: InputModels | None = None) -> Calibration | None:
    """An explicit file (refused if it does not fit), else the one beside the checkpoint (ignored with a warning if
    it does not fit), else None."""
    if explicit:
        return load_calibration(Path(explicit), checkpoint_sha256, metric, embedding, inputs=inputs)
    if checkpoint:
        near = beside(checkpoint)
        if near.is_file():
            try:
                cal = load_calibration(near, checkpoint_sha256, metric, embedding, "found beside the checkpoint",
                                       inputs)
                log.info("%s: calibration file found beside the checkpoint: its impostor evidence joins the "
                         "threshold's", near)
                return cal
            except UserError as exc:
                log.warning("%s: ignored", exc)
    return None
