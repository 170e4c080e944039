"""Drawing: one stable color per identity, boxes and labels that stay readable at any video size."""
from __future__ import annotations

import colorsys
import time
from dataclasses import dataclass

import cv2
import numpy as np

from allinone.results.words import why

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


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Area shared by two xyxy rectangles."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(boxes: list[tuple[int, int, int, int]], sizes: list[tuple[int, int]], frame_wh: tuple[int, int]
                 ) -> list[tuple[int, int, int, int]]:
    """Where each box's label tag goes (xyxy): greedily, boxes from the top of the picture down, the first of
    above the box, inside it at the top, below it, inside it at the bottom — at the box's left edge, then the same
    at its right edge — that stays in the frame and overlaps no tag placed before; when every spot collides, the one
    overlapping least. So people walking side by side, whose tags above their boxes would overlap, get one tag
    above and the next inside its box, and no tag hides another."""
    w, h = frame_wh
    placed: list[tuple[int, int, int, int] | None] = [None] * len(boxes)
    for i in sorted(range(len(boxes)), key=lambda k: (boxes[k][1], boxes[k][0])):
        x1, y1, x2, y2 = boxes[i]
        tw, th = sizes[i]
        best, best_cost = None, None
        for tx in (x1, x2 - tw):  # starting at the box's left edge first: the tag reads as the box's
            for ty in (y1 - th, y1, y2, y2 - th):
                tx = min(max(tx, 0), max(w - tw, 0))
                ty_in = min(max(ty, 0), max(h - th, 0))
                rect = (tx, ty_in, tx + tw, ty_in + th)
                cost = sum(_overlap(rect, q) for q in placed if q is not None) + (abs(ty_in - ty) * tw)
                if best_cost is None or cost < best_cost:
                    best, best_cost = rect, cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        placed[i] = best
    return placed  # type: ignore[return-value]


def draw(frame: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """Draw boxes with filled label tags onto ``frame`` in place (and return it); tags are placed so that none
    hides another (``place_labels``). Boxes first, then every tag, so no box line crosses a tag."""
    h, w = frame.shape[:2]
    scale = max(0.4, min(h, w) / 900.0)
    thick = max(1, int(round(2 * scale)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    rects, sizes, labelled = [], [], []
    for box in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in box.xyxy)
        if box.color == UNKNOWN_COLOR:  # a dark rim keeps the gray box visible on bright backgrounds
            cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.rectangle(frame, (x1, y1), (x2, y2), box.color, thick, cv2.LINE_AA)
        if box.label:
            (tw, th), base = cv2.getTextSize(box.label, font, scale, thick)
            rects.append((x1, y1, x2, y2))
            sizes.append((tw + 4, th + base + 2))
            labelled.append((box, th))
    for (box, th), (tx, ty, tx2, ty2) in zip(labelled, place_labels(rects, sizes, (w, h))):
        cv2.rectangle(frame, (tx, ty), (tx2, ty2), box.color, -1)
        lum = 0.114 * box.color[0] + 0.587 * box.color[1] + 0.299 * box.color[2]
        text_color = (0, 0, 0) if lum > 140 else (255, 255, 255)
        cv2.putText(frame, box.label, (tx + 2, ty + th + 1), font, scale, text_color, thick, cv2.LINE_AA)
    return frame


# COCO-17 bones drawn between joints (GaitGraph's and OpenGait's skeleton); joints below this score are not drawn.
SKELETON = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12),
            (11, 13), (13, 15), (12, 14), (14, 16))
MIN_JOINT_SCORE = 0.2


def draw_skeleton(frame: np.ndarray, xy: np.ndarray, conf: np.ndarray, color: tuple[int, int, int]) -> None:
    """A COCO-17 pose (xy [17, 2] frame pixels, conf [17]) onto ``frame`` in place: bones in the person's color with
    a dark rim, joints as dots; joints scored below MIN_JOINT_SCORE (and their bones) left out."""
    h, w = frame.shape[:2]
    thick = max(1, int(round(min(h, w) / 360)))
    pts = [(int(round(x)), int(round(y))) for x, y in xy]
    seen = conf >= MIN_JOINT_SCORE
    for a, b in SKELETON:
        if seen[a] and seen[b]:
            cv2.line(frame, pts[a], pts[b], (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.line(frame, pts[a], pts[b], color, thick, cv2.LINE_AA)
    for p, ok in zip(pts, seen):
        if ok:
            cv2.circle(frame, p, thick + 1, (255, 255, 255), -1, cv2.LINE_AA)


class Skeletons:
    """Tracks' poses by frame, for drawing in step with a video's frames: {track id: Keypoints} → at(frame)."""

    def __init__(self, tracks: dict) -> None:
        self.by_frame: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        for tid, kp in tracks.items():
            for i, f in enumerate(kp.frames.tolist()):
                self.by_frame.setdefault(f, {})[int(tid)] = (kp.xy[i], kp.confidence[i])

    def at(self, index: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return self.by_frame.get(index, {})


def draw_poses(frame: np.ndarray, poses: dict[int, tuple[np.ndarray, np.ndarray]] | None,
               colors: dict[int, tuple[int, int, int]]) -> None:
    for tid, (xy, conf) in (poses or {}).items():
        draw_skeleton(frame, xy, conf, colors.get(tid, UNKNOWN_COLOR))


def significant(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, trailing zeros kept: 0.03 → "0.0300", 0.0351 → "0.0351"."""
    text = f"{x:#.{digits}g}"
    return text[:-1] if text.endswith(".") else text


class TrackedVideo:
    """The tracked video (every track drawn: box, ``<prefix><id>``, one color per track), drawn frame by frame
    during a video's first pass, so the video is decoded once for it; encoding runs in VideoSink's thread."""

    def __init__(self, path, fps: float, size_wh: tuple[int, int], prefix: str) -> None:
        from allinone.io.video import VideoSink
        self.sink = VideoSink(path, fps, size_wh)
        self.prefix = prefix

    def __call__(self, frame: np.ndarray, xyxy: np.ndarray, track_ids: np.ndarray,
                 poses: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Draw onto ``frame`` in place (the caller is done with it) and queue it for encoding; ``poses``: track id →
        (xy [17, 2], confidence [17]) of this frame, drawn under the boxes."""
        draw_poses(frame, poses, {int(t): identity_color(int(t)) for t in track_ids})
        self.sink.write(draw(frame, [Box(b, identity_color(int(t)), f"{self.prefix}{int(t)}")
                                     for b, t in zip(xyxy, track_ids)]))

    def close(self) -> None:
        self.sink.close()

    def discard(self) -> None:
        self.sink.discard()


def decision_box(xyxy: np.ndarray, tid: int, d, colors: dict[str, int]) -> Box:
    """The result-video box of probe track ``tid`` with its Decision ``d`` (None: no decision)."""
    if d is None or d.status == "too_short":
        return Box(xyxy, UNKNOWN_COLOR, f"P{tid} too short")
    if d.status == "match":
        return Box(xyxy, identity_color(colors.get(d.identity, 0)), f"P{tid} {d.identity} {significant(d.distance)}")
    return Box(xyxy, UNKNOWN_COLOR, f"P{tid} unknown ({why(d.reason, short=True)})")


def render_video(info, mot_path, writer, gallery_name: str | None, identities, decisions,
                 quiet: bool, timings: dict[str, float], annotated: bool = True,
                 skeletons: Skeletons | None = None) -> dict[str, str]:
    """Second decode of a video: draw its tracks, read back from its MOT file in step with the frames (so nothing
    grows with the video's length). The tracked video (one color per track, labels G<id> or P<id>) when
    ``annotated`` (a run draws it in the first pass instead: TrackedVideo); for a probe with decisions also the result video ``G-<gallery>_P-<probe>.mp4``, where each
    person wears the color of the identity they matched and a label ``P<id> <identity> <distance>``, or gray
    ``P<id> unknown (<why>)``, the console's words for the reason. ``skeletons``: the tracks' poses, drawn under their boxes. Returns the run-relative paths written; with nothing to write the video is not
    decoded at all."""
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
    if not outputs:  # the tracked video was drawn in the first pass: nothing left that needs a second decode
        return outputs
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
            poses = skeletons.at(index) if skeletons is not None else None
            if "result_video" in sinks:
                boxes = [decision_box(b, tid, mine.get(tid), colors) for tid, b in people]
                out = frame.copy()
                draw_poses(out, poses, {tid: box.color for (tid, _), box in zip(people, boxes)})
                sinks["result_video"].write(draw(out, boxes))
            if "annotated_video" in sinks:
                draw_poses(frame, poses, {tid: identity_color(tid) for tid, _ in people})
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
