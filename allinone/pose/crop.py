"""Person crops for a top-down keypoint model, and the way back from crop pixels to frame pixels.

A box is grown by ``scale`` around its centre to the model's aspect ratio (mmpose's top-down crop: the wider of
the box and its height times the aspect, then times 1.25), cut with one affine warp (zeros outside the frame) and
resized to the model's input; each crop keeps (x0, y0, s) so that frame = crop * s + (x0, y0).
"""
from __future__ import annotations

import cv2
import numpy as np


def crop_windows(boxes: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    """Boxes (N, 4) xyxy → (N, 3) float64 (x0, y0, s): the crop's top-left corner in the frame and frame pixels per
    crop pixel, for crops of ``size`` = (h, w)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = float(size[0]), float(size[1])
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    bw, bh = np.maximum(b[:, 2] - b[:, 0], 1.0), np.maximum(b[:, 3] - b[:, 1], 1.0)
    win_w = np.maximum(bw, bh * w / h) * scale
    s = win_w / w
    return np.stack([cx - win_w / 2, cy - h * s / 2, s], axis=1)


def crop_people(frame: np.ndarray, boxes: np.ndarray, size: tuple[int, int], scale: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H, W, 3] frame and (N, 4) boxes → (crops uint8 [N, h, w, 3] in the frame's channel order,
    windows (N, 3) as crop_windows)."""
    win = crop_windows(boxes, size, scale)
    h, w = int(size[0]), int(size[1])
    crops = np.empty((len(win), h, w, 3), np.uint8)
    for i, (x0, y0, s) in enumerate(win):
        m = np.array([[1 / s, 0, -x0 / s], [0, 1 / s, -y0 / s]], np.float64)
        interp = cv2.INTER_AREA if s > 1 else cv2.INTER_LINEAR
        crops[i] = cv2.warpAffine(frame, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crops, win


def to_frame(xy_crop: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Keypoints (N, K, 2) in crop pixels → frame pixels, float32."""
    w = np.asarray(windows, np.float64)
    return (xy_crop * w[:, None, 2:3] + w[:, None, :2]).astype(np.float32)
