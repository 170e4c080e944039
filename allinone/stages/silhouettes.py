"""The silhouette stage: quality filter → square crops → PP-HumanSeg masks (batched) → OpenGait alignment.

Per frame it takes the tracked boxes (and the frame's detections, for occluders), decides which boxes are worth a
silhouette, segments those in batches across frames and tracks, keeps only the mask inside the person's own box and
outside the boxes of people in front, writes the raw masks as PNG and keeps OpenGait's aligned 64x64 silhouettes.
Tracks are handed back one by one as they end (``ended`` / ``take``), so a long video keeps in memory only the
silhouettes of the people in view: at most ``keep`` per track, either the first ones (OpenGait's frames_all_limit:
later frames are not even segmented) or, for live streams, the latest ones (a sliding window).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from typing import Callable

import cv2
import numpy as np

from allinone.stages.align import align_silhouette
from allinone.config import QualityConfig, SegmentConfig
from allinone.records import DROP_REASONS, Detections, Silhouettes
from allinone.segment import Segmenter
from allinone.segment.crop import box_to_crop, crop_batch, probs_to_masks
from allinone.stages.track import iou_matrix

log = logging.getLogger(__name__)


def frame_stride(fps: float, frame_step: int, target_fps: float) -> int:
    """Every how many frames of a track a silhouette is cut: ``frame_step`` times round(fps / target_fps) for video
    faster than 1.5 x target_fps (50/60 fps footage brought to about the training frame rate)."""
    fps_step = 1
    if target_fps > 0 and fps > 1.5 * target_fps:
        fps_step = max(1, int(round(fps / target_fps)))
    return frame_step * fps_step


def covered_by_front(xyxy: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """For each box of ``xyxy`` [N, 4]: the largest share of its area under one box of a person in front (a box of
    ``others`` [M, 4] whose bottom edge is lower in the picture, not the box itself), and those front boxes.

    ``others`` holds every person box of the frame, ``xyxy`` among them.
    """
    n = len(xyxy)
    covered = np.zeros(n)
    fronts: list[np.ndarray] = []
    if not n:
        return covered, fronts
    lo = np.maximum(xyxy[:, None, :2], others[None, :, :2])
    hi = np.minimum(xyxy[:, None, 2:], others[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)  # [N, M]
    area = np.prod(np.clip(xyxy[:, 2:] - xyxy[:, :2], 1e-9, None), axis=1)
    same = iou_matrix(xyxy, others) > 0.95  # the box itself (or its duplicate)
    front = (others[None, :, 3] > xyxy[:, None, 3]) & ~same & (inter > 0)
    share = np.where(front, inter / area[:, None], 0.0)
    covered = share.max(axis=1) if others.size else covered
    fronts = [others[front[i]] for i in range(n)]
    return covered, fronts


def keep_best_crop(best: dict[int, tuple[float, np.ndarray]], frame: np.ndarray, tid: int, xyxy: np.ndarray,
                   score: float) -> None:
    """Keep in ``best[tid]`` (score, crop) the person as seen in their most confident box, 128 px high."""
    if tid in best and best[tid][0] >= score:
        return
    h, w = frame.shape[:2]
    x1, y1 = max(int(xyxy[0]), 0), max(int(xyxy[1]), 0)
    x2, y2 = min(int(np.ceil(xyxy[2])), w), min(int(np.ceil(xyxy[3])), h)
    if x2 <= x1 or y2 <= y1:
        return
    crop = frame[y1:y2, x1:x2]
    out_w = max(1, int(round(crop.shape[1] * 128 / crop.shape[0])))
    best[tid] = (score, cv2.resize(crop, (min(out_w, 256), 128), interpolation=cv2.INTER_AREA))


class SilhouetteStage:
    """Built once per run with the segmenter and settings; ``video(...)`` starts the per-video accumulator."""

    def __init__(self, segmenter: Segmenter, segment: SegmentConfig, quality: QualityConfig,
                 high_threshold: float) -> None:
        self.segmenter = segmenter
        self.cfg = segment
        self.quality = quality
        self.high_threshold = high_threshold

    def video(self, fps: float, frame_hw: tuple[int, int], png_path: Callable[[int, int], str] | None,
              timings: dict[str, float], keep: int = 720, window: bool = False) -> "VideoSilhouettes":
        """png_path(track id, frame index) → where to write that raw mask (None: no PNGs). keep: silhouettes held
        per track, the first ones (window False) or the latest (window True)."""
        return VideoSilhouettes(self, frame_stride(fps, self.cfg.frame_step, self.cfg.target_fps), frame_hw,
                                png_path, timings, keep, window)


class VideoSilhouettes:
    """One video's silhouettes, fed frame by frame (``add``), collected by ``finish``."""

    def __init__(self, stage: SilhouetteStage, stride: int, frame_hw: tuple[int, int],
                 png_path: Callable[[int, int], str] | None, timings: dict[str, float], keep: int = 720,
                 window: bool = False) -> None:
        self.stage = stage
        self.stride = stride
        self.frame_hw = frame_hw
        self.png_path = png_path
        self.timings = timings
        self.keep = keep
        self.window = window
        self.first: dict[int, int] = {}
        self.last_seen: dict[int, int] = {}
        self.pending_crops: list[np.ndarray] = []
        self.pending: list[tuple[int, int, np.ndarray | None]] = []  # (track id, frame, crop-space keep-out boxes)
        self.aligned: dict[int, deque] = {}
        self.frames: dict[int, deque] = {}
        self.taken: dict[int, int] = defaultdict(int)  # silhouettes due (segmented or pending) per track
        self.total: dict[int, int] = defaultdict(int)  # silhouettes ever aligned per track
        self.dropped: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(DROP_REASONS, 0))
        self.best: dict[int, tuple[float, np.ndarray]] = {}  # (score, small crop of the person)

    def _store(self, tid: int) -> tuple[deque, deque]:
        if tid not in self.aligned:
            size = self.keep if self.window else None
            self.aligned[tid], self.frames[tid] = deque(maxlen=size), deque(maxlen=size)
        return self.aligned[tid], self.frames[tid]

    def _reasons(self, tracked: Detections, dets: Detections) -> tuple[list[str | None], list[np.ndarray]]:
        q = self.stage.quality
        h, w = self.frame_hw
        b = tracked.xyxy.astype(np.float64)
        m = q.border_margin
        border = (b[:, 0] <= m) | (b[:, 1] <= m) | (b[:, 2] >= w - m) | (b[:, 3] >= h - m)
        strong = dets.xyxy[dets.confidence >= self.stage.high_threshold].astype(np.float64)
        others = np.concatenate([b, strong]) if len(strong) else b
        covered, fronts = covered_by_front(b, others)
        low = tracked.confidence < self.stage.high_threshold
        reasons: list[str | None] = []
        for i in range(len(b)):
            if border[i]:
                reasons.append("border")
            elif covered[i] > q.max_covered:
                reasons.append("occluded")
            elif q.drop_low_score and low[i]:
                reasons.append("low_score")
            else:
                reasons.append(None)
        return reasons, fronts

    def add(self, frame: np.ndarray, index: int, tracked: Detections, dets: Detections) -> None:
        """One frame: its index, the tracker's boxes (track_id set) and all of the detector's boxes."""
        if not len(tracked):
            return
        t0 = time.perf_counter()
        due = []
        for k, tid in enumerate(tracked.track_id):
            tid = int(tid)
            first = self.first.setdefault(tid, index)
            self.last_seen[tid] = index
            if (index - first) % self.stride == 0:
                due.append(k)
        if not due:
            return
        reasons, fronts = self._reasons(tracked, dets)
        keep = []
        for k in due:
            tid = int(tracked.track_id[k])
            if reasons[k] is not None:
                self.dropped[tid][reasons[k]] += 1
            elif not self.window and self.taken[tid] >= self.keep:
                self.dropped[tid]["over_limit"] += 1  # OpenGait uses the first max_frames only
            else:
                keep.append(k)
                self.taken[tid] += 1
                self._keep_best_crop(frame, tid, tracked.xyxy[k], float(tracked.confidence[k]))
        if keep:
            cfg, size = self.stage.cfg, self.stage.segmenter.input_size
            crops = crop_batch(frame, tracked.xyxy[keep], cfg.box_pad, size, cfg.canvas_value)
            self.pending_crops.extend(crops)
            for k in keep:
                clip = None
                if self.stage.quality.clip_mask:
                    boxes = np.concatenate([tracked.xyxy[k][None].astype(np.float64), fronts[k]])
                    clip = box_to_crop(tracked.xyxy[k], cfg.box_pad, self.frame_hw, size, boxes)
                self.pending.append((int(tracked.track_id[k]), index, clip))
        self.timings["crop"] += time.perf_counter() - t0
        if len(self.pending_crops) >= self.stage.cfg.batch_size:
            self.flush()

    def _keep_best_crop(self, frame: np.ndarray, tid: int, xyxy: np.ndarray, score: float) -> None:
        """The person as seen in their most confident usable box, 128 px high (for reports and the gallery)."""
        keep_best_crop(self.best, frame, tid, xyxy, score)

    @staticmethod
    def _clip(mask: np.ndarray, clip: np.ndarray) -> np.ndarray:
        """Zero the mask outside clip[0] (the person's box) and inside clip[1:] (people in front)."""
        h, w = mask.shape
        x1, y1, x2, y2 = clip[0]
        keep = np.zeros_like(mask)
        c = (max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0), min(int(np.ceil(x2)), w), min(int(np.ceil(y2)), h))
        keep[c[1]:c[3], c[0]:c[2]] = mask[c[1]:c[3], c[0]:c[2]]
        for fx1, fy1, fx2, fy2 in clip[1:]:
            a = (max(int(np.ceil(fx1)), 0), max(int(np.ceil(fy1)), 0), min(int(np.floor(fx2)), w),
                 min(int(np.floor(fy2)), h))
            if a[2] > a[0] and a[3] > a[1]:
                keep[a[1]:a[3], a[0]:a[2]] = 0
        return keep

    def flush(self) -> None:
        if not self.pending_crops:
            return
        t0 = time.perf_counter()
        probs = self.stage.segmenter(np.stack(self.pending_crops))
        masks = probs_to_masks(probs, self.stage.cfg.threshold)
        t1 = time.perf_counter()
        cleaned = [mask if clip is None else self._clip(mask, clip) for (_, _, clip), mask in zip(self.pending, masks)]
        if self.png_path is not None:
            for (tid, index, _), mask in zip(self.pending, cleaned):
                cv2.imwrite(self.png_path(tid, index), mask)
        t2 = time.perf_counter()
        for (tid, index, _), mask in zip(self.pending, cleaned):
            sil = align_silhouette(mask)
            if sil is None:
                self.dropped[tid]["empty_mask"] += 1
            else:
                aligned, frames = self._store(tid)
                aligned.append(sil)
                frames.append(index)
                self.total[tid] += 1
        t3 = time.perf_counter()
        self.timings["segment"] += t1 - t0
        self.timings["write"] += t2 - t1
        self.timings["align"] += t3 - t2
        self.pending_crops.clear()
        self.pending.clear()

    def ended(self, index: int, gap: int) -> list[int]:
        """Tracks last seen more than ``gap`` frames before frame ``index`` (the tracker has let them go)."""
        return [tid for tid, last in self.last_seen.items() if index - last > gap]

    def tracks(self) -> list[int]:
        return sorted(self.first)

    def window_of(self, tid: int) -> Silhouettes:
        """The silhouettes held for a track now (segmenting what is pending first), without releasing them."""
        if any(t == tid for t, _, _ in self.pending):
            self.flush()
        aligned = np.stack(self.aligned[tid]) if self.aligned.get(tid) else np.zeros((0, 64, 64), np.uint8)
        return Silhouettes(tid, aligned, np.asarray(self.frames.get(tid, ()), np.int64), dict(self.dropped[tid]))

    def silhouettes_total(self, tid: int) -> int:
        return self.total[tid]

    def take(self, tid: int) -> tuple[Silhouettes, np.ndarray | None]:
        """A track's silhouettes and best crop, released from memory (segmenting what is pending first)."""
        sil = self.window_of(tid)
        for d in (self.first, self.last_seen, self.aligned, self.frames, self.taken, self.total):
            d.pop(tid, None)
        self.dropped.pop(tid, None)
        best = self.best.pop(tid, None)
        return sil, None if best is None else best[1]

    def finish(self) -> dict[int, Silhouettes]:
        """Every track still held, released (tests and callers that want them all at the end)."""
        self.flush()
        return {tid: self.take(tid)[0] for tid in self.tracks()}
