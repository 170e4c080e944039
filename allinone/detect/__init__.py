"""Person detection: one ``Detector`` interface, two backends (YOLOX via ONNX Runtime, ultralytics YOLO).

Pick a backend with :func:`build_detector`; its spec is a file path or an ultralytics model name.
"""
from __future__ import annotations

import re
from pathlib import PurePath
from typing import Protocol

import numpy as np

from allinone.config import DetectConfig
from allinone.errors import UserError
from allinone.records import Detections
from allinone.detect.ultralytics_yolo import UltralyticsDetector
from allinone.detect.yolox_onnx import YoloxOnnxDetector

__all__ = ["BACKENDS", "Detector", "UltralyticsDetector", "YoloxOnnxDetector", "backend_for", "build_detector"]


class Detector(Protocol):
    """Finds people in one frame.

    ``__call__(frame)``: frame [h, w, 3] uint8 BGR → Detections of persons only, xyxy in frame pixels clipped to
    the frame, confidence >= the configured score threshold, after NMS, boxes lower than min_box_height dropped.
    """

    name: str  # backend name, a key of BACKENDS
    path: str | None  # the weight file actually loaded (for the run manifest); None when built from a config

    def __call__(self, frame: np.ndarray) -> Detections: ...

    def batch(self, frames: list[np.ndarray]) -> list[Detections]:
        """Several frames at once (one forward where the backend can: a GPU's best case) → one Detections each,
        equal to calling the detector frame by frame."""
        ...


BACKENDS: dict[str, type] = {"yolox-onnx": YoloxOnnxDetector, "ultralytics": UltralyticsDetector}

# A bare ultralytics model name: yolo11n, yolov8s, yolo26n-seg, yoloe-11s-seg ... (no folder part); a bare
# "yolox..." is not one (YOLOX comes as a .onnx file).
_ULTRALYTICS_NAME = re.compile(r"^yolo(?!x)[a-z0-9._-]*$", re.IGNORECASE)


def backend_for(spec: str) -> str:
    """The BACKENDS key that handles ``spec`` (decided from its suffix or name alone; nothing is loaded)."""
    path = PurePath(spec)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "yolox-onnx"
    if suffix in (".pt", ".yaml", ".yml"):
        return "ultralytics"
    if not suffix and len(path.parts) == 1 and _ULTRALYTICS_NAME.match(spec):
        return "ultralytics"
    raise UserError("unknown detector model: expected a YOLOX .onnx file, an ultralytics .pt/.yaml file, "
                    "or an ultralytics model name such as yolo11n.pt", spec)


def build_detector(spec: str, config: DetectConfig, device: str, threads: int = 0) -> Detector:
    """Build the detector for ``spec`` (a .onnx/.pt/.yaml path or an ultralytics name) on ``device``.

    ``threads`` bounds ONNX Runtime's intra-op threads (0: its default); the ultralytics backend ignores it.
    """
    return BACKENDS[backend_for(spec)](spec, config, device, threads=threads)
