"""Drawing: one stable color per identity, boxes and labels that stay readable at any video size."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

UNKNOWN_COLOR = (150, 150, 150)  # BGR gray for probe people that match nobody


def identity_color(identity: int) -> tuple[int, int, int]:
    """A BGR color for an integer identity: hues spaced by the golden ratio, so neighbouring ids differ clearly
    and the same id always gets the same color."""
    hue = (identity * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


@dataclass(frozen=True)
class Box:
    """One box to draw: xyxy pixels, a BGR color and a label."""

    xyxy: np.ndarray
    color: tuple[int, int, int]
    label: str


def draw(frame: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """Draw boxes with filled label tags onto ``frame`` in place (and return it)."""
    h, w = frame.shape[:2]
    scale = max(0.4, min(h, w) / 900.0)
    thick = max(1, int(round(2 * scale)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in box.xyxy)
        cv2.rectangle(frame, (x1, y1), (x2, y2), box.color, thick, cv2.LINE_AA)
        if not box.label:
            continue
        (tw, th), base = cv2.getTextSize(box.label, font, scale, thick)
        ty = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1  # above the box, or inside it at the top
        tx = min(max(x1, 0), max(w - tw - 4, 0))
        cv2.rectangle(frame, (tx, ty), (tx + tw + 4, ty + th + base + 2), box.color, -1)
        lum = 0.114 * box.color[0] + 0.587 * box.color[1] + 0.299 * box.color[2]
        text_color = (0, 0, 0) if lum > 140 else (255, 255, 255)
        cv2.putText(frame, box.label, (tx + 2, ty + th + 1), font, scale, text_color, thick, cv2.LINE_AA)
    return frame
