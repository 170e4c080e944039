"""Person segmentation of square crops: a PaddleSeg inference folder or an ONNX file behind one interface."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from allinone.errors import UserError
from allinone.segment.crop import crop_batch, probs_to_masks, square_crop
from allinone.segment.onnx import OnnxSegmenter
from allinone.segment.paddle import PaddleSegmenter


@runtime_checkable
class Segmenter(Protocol):
    """Person probability for a batch of square crops."""

    input_size: tuple[int, int]  # (h, w) the crops must have

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """crops: uint8 [N, h, w, 3] BGR → float32 [N, h, w] probability of 'person' in [0, 1]."""
        ...


BACKENDS: dict[str, type] = {"paddle": PaddleSegmenter, "onnx": OnnxSegmenter}


def backend_for(path: str | Path) -> str:
    """'paddle' for a folder, 'onnx' for a .onnx file; UserError for anything else."""
    p = Path(path)
    if not p.exists():
        raise UserError("segmentation model not found", p)
    if p.is_dir():
        return "paddle"
    if p.suffix.lower() == ".onnx":
        return "onnx"
    raise UserError("segmentation model must be a PaddleSeg inference folder (with deploy.yaml) or a .onnx "
                    "file", p)


def build_segmenter(path: str, device: str, threads: int = 0) -> Segmenter:
    """The segmenter for ``path`` (folder → Paddle, .onnx → ONNX Runtime) on a resolved device."""
    return BACKENDS[backend_for(path)](path, device, threads)


__all__ = ["BACKENDS", "OnnxSegmenter", "PaddleSegmenter", "Segmenter", "backend_for", "build_segmenter",
           "crop_batch", "probs_to_masks", "square_crop"]
