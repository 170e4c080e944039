"""The gait stage's interface and the backend for a model file (torch for .pt/.pth, ONNX Runtime for .onnx)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from allinone.config import GaitConfig
from allinone.errors import UserError


class GaitBackend(Protocol):
    """A gait stage: aligned uint8 [T, 64, 64] sequences → float32 [c, p] embeddings, one per sequence."""

    arch: str  # OpenGait architecture name ('unknown' for an ONNX graph without metadata)
    metric: str  # the distance OpenGait evaluates the model with

    def __call__(self, aligned: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
        """Sequences uint8 [T, 64, 64] (or [T, 64, 44]) → embeddings [c, p]; ``batch``: sequences of one length
        per forward where the backend can."""
        ...


def _backends() -> dict[str, type]:
    from allinone.gait.onnx import OnnxGaitEmbedder
    from allinone.gait.checkpoint import GaitEmbedder

    return {".pt": GaitEmbedder, ".pth": GaitEmbedder, ".onnx": OnnxGaitEmbedder}


NOT_A_FILE = "is a directory, not a gait model file (an OpenGait .pt checkpoint or an .onnx file)"


def check_model_file(path: str | Path) -> Path:
    """The gait model path, or a UserError naming it: missing, or a directory. Cheap: no model is read."""
    path = Path(path)
    if path.is_dir():
        raise UserError(NOT_A_FILE, path)
    if not path.exists():
        raise UserError("gait model not found", path)
    return path


def embedder_for(path: str | Path, config: GaitConfig, device: str = "cpu") -> GaitBackend:
    """The gait stage for a model file: torch (GaitEmbedder) for .pt/.pth, ONNX Runtime for .onnx."""
    if not str(path):
        raise UserError("no gait model given (an OpenGait .pt checkpoint or an exported .onnx file)")
    path = Path(path)
    if path.is_dir():
        raise UserError(NOT_A_FILE, path)
    backends = _backends()
    make = backends.get(path.suffix.lower())
    if make is None:
        raise UserError(f"unknown gait model type {path.suffix or '(no suffix)'!r}; expected "
                        f"{', '.join(backends)}", path)
    return make(dataclasses.replace(config, model=str(path)), device)
