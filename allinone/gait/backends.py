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
    # (keypoint models, gait/skeleton.py, have ``input = "keypoints"`` and take float32 [T, 17, 3] sequences:
    # x, y in frame pixels and confidence, from the pose stage)

    def __call__(self, aligned: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
        """Sequences uint8 [T, 64, 64] (or [T, 64, 44]) → embeddings [c, p]; ``batch``: sequences of one length
        per forward where the backend can."""
        ...


def _torch_backend(config: GaitConfig, device: str) -> GaitBackend:
    """A torch checkpoint's stage: GaitEmbedder for silhouette models, KeypointEmbedder for keypoint models."""
    from allinone.gait.checkpoint import GaitEmbedder, load_gait_model

    if not config.model:
        return GaitEmbedder(config, device)  # its own message for a missing checkpoint
    model, spec = load_gait_model(config.model, config.arch, device, trust_pickle=config.trust_checkpoint)
    if spec.input == "keypoints":
        from allinone.gait.skeleton import KeypointEmbedder
        return KeypointEmbedder(config, device, model, spec)
    return GaitEmbedder(config, device, (model, spec))


def _backends() -> dict[str, object]:
    from allinone.gait.onnx import OnnxGaitEmbedder

    return {".pt": _torch_backend, ".pth": _torch_backend, ".onnx": OnnxGaitEmbedder}


NOT_A_FILE = "is a directory, not a gait model file (an OpenGait .pt checkpoint or an .onnx file)"


def _keypoint_arch(path: str | Path):
    """The architecture of a gait model file that reads keypoints (GaitGraph: keypoints alone; SkeletonGait++:
    skeleton maps beside the silhouettes), told from its pickle naming every marker key of one; None for anything
    else. Reads the bytes of the zip's data.pkl without unpickling it."""
    import zipfile

    from allinone.gait.registry import ARCHS

    path = Path(path)
    if path.suffix.lower() not in (".pt", ".pth") or not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/data.pkl")]
            if len(names) != 1:
                return None
            data = zf.read(names[0])
    except (zipfile.BadZipFile, OSError):
        return None
    return next((spec for spec in ARCHS.values() if (spec.input == "keypoints" or spec.channels > 1)
                 and all(m.encode() in data for m in spec.markers)), None)


def reads_keypoints(path: str | Path) -> bool:
    """Whether a gait model file needs the pose stage's keypoints (GaitGraph, SkeletonGait++). Cheap: no
    unpickling."""
    return _keypoint_arch(path) is not None


def reads_silhouettes(path: str | Path) -> bool:
    """Whether a gait model file reads silhouettes: every model but the keypoint-only ones (GaitGraph)."""
    spec = _keypoint_arch(path)
    return spec is None or spec.input == "silhouettes"


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
