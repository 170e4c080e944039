"""OpenGait's silhouette pretreatment (``imgs2pickle``, non-GREW, img_size 64).

A raw mask is cropped to its rows with foreground, resized (cubic) to height 64 keeping the aspect ratio, then a
64-wide window is cut around the column where the cumulative foreground mass first exceeds half of the total.
The model then sees the window with 10 columns cut off each side (64x44), scaled to [0, 1] (gait/inputs.py).
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

SIZE = 64  # OpenGait's img_size for GaitBase
MIN_SUM = 10000  # masks whose pixel sum is at most this are treated as empty (sum of 0/255 values)


def align_silhouette(mask: np.ndarray) -> np.ndarray | None:
    """One raw mask [H, W] uint8 (0/255) → aligned [64, 64] uint8, or None where OpenGait drops the frame.

    Dropped: pixel sum <= 10000, a resized width of 0, or an x-center of None or 0 (OpenGait tests the center
    with ``not``, so a center in column 0 counts as missing).
    """
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be uint8 [H, W], got {mask.dtype} {mask.shape}")
    total = mask.sum()  # uint64 accumulator, as numpy does for uint8
    if total <= MIN_SUM:
        return None

    rows = np.flatnonzero(mask.sum(axis=1))
    body = mask[rows[0]: rows[-1] + 1, :]

    new_w = int(SIZE * (body.shape[1] / body.shape[0]))
    if new_w <= 0:  # taller than 64x its width: OpenGait's cv2.resize would fail here
        return None
    body = cv2.resize(body, (new_w, SIZE), interpolation=cv2.INTER_CUBIC)

    col_mass = body.sum(axis=0).cumsum()
    past_half = col_mass > body.sum() / 2  # uint64 vs float64 comparison, as in the reference
    if not past_half.any():
        return None
    x_center = int(np.argmax(past_half))  # first column past half of the mass
    if x_center == 0:
        return None

    half = SIZE // 2
    left, right = x_center - half, x_center + half
    if left <= 0 or right >= body.shape[1]:
        # The window leaves the image: widen it by `half` zero columns on each side and shift the window.
        body = np.pad(body, ((0, 0), (half, half)), mode="constant", constant_values=0)
        left, right = left + half, right + half
    return np.ascontiguousarray(body[:, left:right]).astype(np.uint8)


def align_sequence(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks [T, H, W] uint8 → (aligned [T', 64, 64] uint8, kept_index [T'] int64 into T)."""
    if masks.ndim != 3 or masks.dtype != np.uint8:
        raise ValueError(f"masks must be uint8 [T, H, W], got {masks.dtype} {masks.shape}")
    out: list[np.ndarray] = []
    kept: list[int] = []
    for t, mask in enumerate(masks):
        sil = align_silhouette(mask)
        if sil is not None:
            out.append(sil)
            kept.append(t)
    if len(kept) < len(masks):
        log.debug("alignment dropped %d of %d masks (empty or without a center)", len(masks) - len(kept), len(masks))
    aligned = np.stack(out) if out else np.zeros((0, SIZE, SIZE), np.uint8)
    return aligned, np.asarray(kept, dtype=np.int64)


