"""The models that make a gait model's input: the segmenter (silhouettes) and, for a gait model that reads
keypoints, the pose model. They are part of a feature's identity: features of one gait checkpoint made from another
segmenter's silhouettes are not comparable, so a gallery file and a calibration file record them and refuse a run
whose input models differ (gallery/store.py ModelInfo, decide/calibration.py). A run's own: stages/build.py
input_models."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNKNOWN = None  # a sha256 of None: not recorded (a file from before this was kept), never compared


@dataclass(frozen=True)
class InputModel:
    """One input model: its file (or folder) and sha256. An empty sha256: the gait model does not use this kind of
    model; None: not known."""

    path: str = ""
    sha256: str | None = UNKNOWN

    @property
    def label(self) -> str:
        if self.sha256 == "":
            return "none"
        return f"{Path(self.path).name or '?'} (sha256 {self.sha256[:12]}…)" if self.sha256 else "an unknown one"


@dataclass(frozen=True)
class InputModels:
    segmenter: InputModel = InputModel()
    pose: InputModel = InputModel()

    def mismatch(self, other: "InputModels", made: str) -> str | None:
        """Why features made from ``other``'s inputs cannot go with these, or None. ``made`` says how these were
        made ('was enrolled', 'was calibrated'); a model unknown on either side is not compared."""
        for kind, flag in (("segmenter", "--seg-model"), ("pose", "--pose-model")):
            mine, theirs = getattr(self, kind), getattr(other, kind)
            if mine.sha256 is UNKNOWN or theirs.sha256 is UNKNOWN or mine.sha256 == theirs.sha256:
                continue
            return (f"{made} with {kind} model {mine.label}; this run uses {theirs.label}: give {flag} "
                    f"{mine.path or '?'} or use another file")
        return None

    def to_json(self) -> dict:
        return {kind: {"path": m.path, "sha256": m.sha256} for kind, m in
                (("segmenter", self.segmenter), ("pose", self.pose))}

    @staticmethod
    def from_json(rec: dict | None) -> "InputModels":
        """The record ``to_json`` wrote; a missing kind (an older file) is unknown."""
        def one(kind: str) -> InputModel:
            m = (rec or {}).get(kind)
            if not isinstance(m, dict) or not (m.get("sha256") is None or isinstance(m.get("sha256"), str)):
                return InputModel()
            return InputModel(str(m.get("path") or ""), m.get("sha256"))
        return InputModels(one("segmenter"), one("pose"))

    @property
    def known(self) -> bool:
        return self.segmenter.sha256 is not UNKNOWN
