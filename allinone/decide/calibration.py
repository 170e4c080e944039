"""Calibration files: a threshold chosen for a target FPIR on a labelled dataset, tied to one checkpoint and metric.

``python main.py calibrate`` writes one (by default beside the checkpoint, as ``<checkpoint stem>.calibration.json``);
a run or rematch takes it with ``--calibration FILE`` or finds the one beside its checkpoint. A file made for
another checkpoint (sha256) or metric is refused by name.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from allinone.errors import UserError, read_json
from allinone.decide.threshold import METRIC_RANGE, Threshold

log = logging.getLogger(__name__)

KIND = "allinone-calibration"


def beside(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.calibration.json")


def write_calibration(path: Path, record: dict) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"kind": KIND, "version": 1, **record}, indent=2, allow_nan=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_calibration(path: Path) -> dict:
    rec = read_json(path, "calibration file")
    if not isinstance(rec, dict) or rec.get("kind") != KIND:
        raise UserError("not a calibration file written by python main.py calibrate", path)
    check_calibration_record(rec, path)
    return rec


def check_calibration_record(rec: dict, path: Path) -> None:
    """A UserError naming the calibration file unless its fields have the types and ranges calibrate writes (a
    hand-edited or damaged file is refused as such, never reported as a bad --threshold)."""
    def bad(why: str) -> UserError:
        return UserError(f"calibration file {why}", path)
    if rec.get("metric") not in METRIC_RANGE:
        raise bad(f"has no known metric ({rec.get('metric')!r}; expected one of {', '.join(METRIC_RANGE)})")
    if not isinstance(rec.get("checkpoint_sha256"), str) or not rec["checkpoint_sha256"]:
        raise bad("has no checkpoint_sha256 (the checkpoint it was made for)")
    value = rec.get("threshold")
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


def calibrated_threshold(path: Path, checkpoint_sha256: str | None, metric: str) -> Threshold:
    """The threshold of a calibration file, after checking it was made for this checkpoint and metric."""
    rec = read_calibration(path)
    if checkpoint_sha256 and rec.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(f"made for another checkpoint ({rec.get('checkpoint', '?')}, sha256 "
                        f"{str(rec.get('checkpoint_sha256'))[:12]}…), not this one ({checkpoint_sha256[:12]}…)", path)
    if rec.get("metric") != metric:
        raise UserError(f"made for the {rec.get('metric')} metric, not {metric}", path)
    value = float(rec["threshold"])
    detail = {"file": str(path), "target_fpir": rec.get("target_fpir"), "dataset": rec.get("dataset"),
              "protocol": rec.get("protocol"), "searches": rec.get("searches")}
    return Threshold(value, "calibrated", detail)


def find_calibration(explicit: str | None, checkpoint: str | None, checkpoint_sha256: str | None,
                     metric: str) -> Threshold | None:
    """An explicit file (refused if it does not fit), else the one beside the checkpoint (ignored with a warning if
    it does not fit), else None."""
    if explicit:
        return calibrated_threshold(Path(explicit), checkpoint_sha256, metric)
    if checkpoint:
        near = beside(checkpoint)
        if near.is_file():
            try:
                return calibrated_threshold(near, checkpoint_sha256, metric)
            except UserError as exc:
                log.warning("%s: ignored", exc)
    return None
