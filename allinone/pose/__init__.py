"""2-D COCO-17 keypoints of a person from their crop: MoveNet (.tflite, LiteRT) or top-down ONNX models behind one
interface, and the stage that runs them on tracked boxes."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from allinone.errors import UserError
from allinone.pose.crop import crop_people, crop_windows, to_frame


@runtime_checkable
class PoseModel(Protocol):
    """Keypoints for a batch of person crops."""

    input_size: tuple[int, int]  # (h, w) the crops must have
    name: str

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """crops: uint8 [N, h, w, 3] BGR → float32 [N, 17, 3]: x, y in crop pixels and a score in [0, 1]."""
        ...


SUFFIXES = (".tflite", ".onnx")


def check_pose_file(path: str | Path) -> Path:
    """The pose model path, or a UserError naming it (missing, a directory, an unknown type). Loads nothing."""
    p = Path(path)
    if p.is_dir():
        raise UserError("is a directory, not a pose model file (a MoveNet .tflite or a keypoint .onnx)", p)
    if not p.exists():
        raise UserError("pose model not found", p)
    if p.suffix.lower() not in SUFFIXES:
        raise UserError(f"unknown pose model type {p.suffix or '(no suffix)'!r}; expected {', '.join(SUFFIXES)}", p)
    return p


def build_pose(path: str | Path, device: str = "cpu", threads: int = 0) -> PoseModel:
    """The pose model for ``path``: .tflite → MoveNet (LiteRT, CPU), .onnx → ONNX Runtime."""
    p = check_pose_file(path)
    if p.suffix.lower() == ".tflite":
        from allinone.pose.movenet import MoveNetPose
        return MoveNetPose(p, threads)
    from allinone.pose.onnx import OnnxPose
    return OnnxPose(p, device, threads)


class PoseEstimator:
    """The pose stage: a frame and person boxes → keypoints in frame pixels. Built once with the model."""

    def __init__(self, model: PoseModel, box_scale: float = 1.25) -> None:
        self.model = model
        self.box_scale = box_scale

    def crops(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(crops uint8 [N, h, w, 3], windows (N, 3)) for the model; see pose/crop.py."""
        return crop_people(frame, boxes, self.model.input_size, self.box_scale)

    def from_crops(self, crops: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crops (any number, from any frames) → (xy float32 [N, 17, 2] frame pixels, confidence [N, 17])."""
        if not len(crops):
            return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
        out = self.model(crops)
        return to_frame(out[..., :2], windows), out[..., 2].astype(np.float32)

    def __call__(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [H, W, 3] frame, (N, 4) xyxy boxes → (xy [N, 17, 2] frame pixels, confidence [N, 17])."""
        return self.from_crops(*self.crops(frame, boxes))


__all__ = ["PoseEstimator", "PoseModel", "build_pose", "check_pose_file", "crop_people", "crop_windows",
           "to_frame"]
