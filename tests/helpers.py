"""Small builders shared by tests: synthetic videos written with OpenCV."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, frames: int, size_wh: tuple[int, int] = (160, 120), fps: float = 25.0,
                seed: int = 0) -> Path:
    """A video of smooth random texture (no people) with a given number of frames."""
    rng = np.random.default_rng(seed)
    w, h = size_wh
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not vw.isOpened():
        raise RuntimeError("cannot write test video")
    for i in range(frames):
        base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
        vw.write(base)
    vw.release()
    return path
