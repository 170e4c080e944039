"""Gait recognition: OpenGait models (GaitBase, GaitSet, GaitPart, GaitGL, DeepGaitV2, SkeletonGait++ with its
skeleton maps), checkpoints, embedding stage.

Names are resolved on first use so that importing the package does not import torch.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "GaitBase": ".gaitbase",
    "load_gaitbase": ".checkpoint",
    "save_gaitbase_checkpoint": ".checkpoint",
    "GaitEmbedder": ".checkpoint",
    "load_gait_model": ".checkpoint",
    "GaitSet": ".gaitset",
    "GaitPart": ".gaitpart",
    "GaitGL": ".gaitgl",
    "DeepGaitV2": ".deepgaitv2",
    "SkeletonGaitPP": ".skeletongait",
    "skeleton_maps": ".skeleton_maps",
    "skeleton_input": ".skeleton_maps",
    "ARCHS": ".registry",
    "ArchSpec": ".registry",
    "matching_archs": ".registry",
    "GaitBackend": ".backends",
    "embedder_for": ".backends",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    return getattr(import_module(_EXPORTS[name], __name__), name)
