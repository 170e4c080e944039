"""OpenGait's evaluation input transform: an aligned [T, 64, 64] sequence as a gait model sees it."""
from __future__ import annotations

import numpy as np


def gait_input(seq: np.ndarray, max_frames: int) -> np.ndarray:
    """One track's aligned uint8 [T, 64, 64] (T >= 1) → float32 [s, 64, 44] for a gait model, s = min(T, max_frames).
    SkeletonGait++'s [T, 3, 64, 64] (skeleton_maps.skeleton_input) → [s, 3, 64, 44] the same way.

    As OpenGait tests (collate_fn, sampler "all" with frames_all_limit): the whole sequence in order, cut to its
    first ``max_frames`` frames; no sampling, so temporal models see the track's own frame rate.
    """
    if seq.ndim not in (3, 4) or len(seq) == 0:
        raise ValueError(f"each sequence must be a non-empty [T, 64, 64] (or [T, 3, 64, 64]) array, got {seq.shape}")
    return to_model_input(seq[:max_frames])


def to_model_input(aligned: np.ndarray) -> np.ndarray:
    """Aligned [T, 64, 64] uint8 → float32 [T, 64, 44] in [0, 1] (OpenGait's BaseSilCuttingTransform); channels
    [T, C, 64, 64] (SkeletonGait++'s maps and silhouette) → [T, C, 64, 44], as the transform cuts the last axis.

    Cuts int(w // 64) * 10 columns from each side (none for sequences already cut to 44 wide, as OpenGait's
    ``if cutting != 0``) and divides by 255 (in float64, then cast, as OpenGait does).
    """
    if aligned.ndim not in (3, 4) or aligned.dtype != np.uint8:
        raise ValueError(f"aligned must be uint8 [T, H, W] or [T, C, H, W], got {aligned.dtype} {aligned.shape}")
    cut = int(aligned.shape[-1] // 64) * 10
    if cut:
        aligned = aligned[..., cut:-cut]
    return (aligned / 255.0).astype(np.float32)
