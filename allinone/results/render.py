"""Drawing: one stable color per identity, boxes and labels that stay readable at any video size."""
from __future__ import annotations

import colorsys
import time
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
        if box.color == UNKNOWN_COLOR:  # a dark rim keeps the gray box visible on bright backgrounds
            cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 0, 0), thick + 2, cv2.LINE_AA)
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


def decision_box(xyxy: np.ndarray, tid: int, d, colors: dict[str, int]) -> Box:
    """The result-video box of probe track ``tid`` with its Decision ``d`` (None: no decision)."""
    if d is None or d.status == "too_short":
        return Box(xyxy, UNKNOWN_COLOR, f"P{tid} too short")
    if d.status == "match":
        return Box(xyxy, identity_color(colors.get(d.identity, 0)), f"P{tid} {d.identity} {d.distance:.2f}")
    return Box(xyxy, UNKNOWN_COLOR, f"P{tid} unknown ({d.reason})")


def render_video(info, mot_path, writer, gallery_name: str | None, identities, decisions,
                 quiet: bool, timings: dict[str, float], annotated: bool = True) -> dict[str, str]:
    """Second decode of a video: draw its tracks, read back from its MOT file in step with the frames (so nothing
    grows with the video's length). Always the tracked video (one color per track, labels G<id> or P<id>) unless
    ``annotated`` is False; for a probe with decisions also the result video ``G-<gallery>_P-<probe>.mp4``, where each
    person wears the color of the identity they matched and a label ``P<id> <identity> <distance>``, or gray
    ``P<id> unknown (<reason>)``. Returns the run-relative paths written."""
    from tqdm import tqdm

    from allinone.io.run_folder import read_mot_by_frame
    from allinone.io.video import VideoSink, VideoSource

    mine = {d.probe_track: d for d in (decisions or []) if d.probe_video == info.name}
    prefix = "G" if info.role == "gallery" else "P"
    outputs: dict[str, str] = {}
    sinks: dict[str, object] = {}
    if annotated:
        outputs["annotated_video"] = f"videos/{info.name}.mp4"
    colors = {i.name: i.key for i in identities or []}
    if info.role == "probe" and decisions is not None and gallery_name is not None:
        outputs["result_video"] = f"G-{gallery_name}_P-{info.name}.mp4"
    for key, rel in outputs.items():
        sinks[key] = VideoSink(writer.path(rel), info.fps, (info.width, info.height))
    t0 = time.perf_counter()
    src = VideoSource(info.path, getattr(info, "rotation", 0))
    rows = read_mot_by_frame(mot_path)
    pending = next(rows, None)
    try:
        for index, frame in enumerate(tqdm(src.frames(), total=info.frames, desc=f"render {info.name}",
                                           unit="frame", disable=quiet, leave=False, dynamic_ncols=True)):
            people = []
            if pending is not None and pending[0] == index:
                people = pending[1]
                pending = next(rows, None)
            if "result_video" in sinks:
                sinks["result_video"].write(draw(frame.copy(), [decision_box(b, tid, mine.get(tid), colors)
                                                                for tid, b in people]))
            if "annotated_video" in sinks:
                sinks["annotated_video"].write(draw(frame, [Box(b, identity_color(tid), f"{prefix}{tid}")
                                                            for tid, b in people]))
    except BaseException:
        for s in sinks.values():
            s.discard()
        raise
    for s in sinks.values():
        s.close()
    timings["render"] += time.perf_counter() - t0
    return outputs
