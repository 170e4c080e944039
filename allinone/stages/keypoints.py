"""The keypoint stage: each tracked person's COCO-17 pose in every frame it is used, from their crop.

Per frame, the people of the frame are one call of the pose model (batched where the backend batches), so the
frame's poses are known before it is drawn. Every ``stride``-th frame of a track is used (video faster than 1.5 x
target_fps is brought to about the models' training frame rate, as for silhouettes). Unlike silhouettes no frame is
dropped for quality: a keypoint gait model reads consecutive frames, and the joints' confidences say what was
seen. Tracks are handed back one by one as they end (``ended`` / ``take``), as the silhouette stage does.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from allinone.pose import PoseEstimator
from allinone.records import Detections, Keypoints
from allinone.stages.silhouettes import frame_stride, keep_best_crop


class KeypointStage:
    """Built once per run with the pose estimator; ``video(...)`` starts the per-video accumulator."""

    def __init__(self, estimator: PoseEstimator, target_fps: float) -> None:
        self.estimator = estimator
        self.target_fps = target_fps

    def video(self, fps: float, timings: dict[str, float], keep: int = 100_000,
              window: bool = False) -> "VideoKeypoints":
        """keep: poses held per track, the first ones (window False) or the latest (window True)."""
        return VideoKeypoints(self.estimator, frame_stride(fps, 1, self.target_fps), timings, keep, window)


class VideoKeypoints:
    """One video's keypoints, fed frame by frame (``add``), handed back per track (``take``)."""

    def __init__(self, estimator: PoseEstimator, stride: int, timings: dict[str, float], keep: int,
                 window: bool) -> None:
        self.estimator, self.stride, self.timings = estimator, stride, timings
        self.keep, self.window = keep, window
        self.first: dict[int, int] = {}
        self.last_seen: dict[int, int] = {}
        self.poses: dict[int, deque] = {}  # (frame, xy [17, 2], confidence [17])
        self.total: dict[int, int] = {}
        self.best: dict[int, tuple[float, np.ndarray]] = {}
        self.latest: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # this frame's poses, for drawing
        self.crops_done = 0  # crops the pose model has seen (bench: cost per crop)

    def add(self, frame: np.ndarray, index: int, tracked: Detections, dets: Detections | None = None) -> None:
        """One frame: its index and the tracker's boxes (track_id set)."""
        self.latest = {}
        if not len(tracked):
            return
        due = []
        for k, tid in enumerate(tracked.track_id.tolist()):
            first = self.first.setdefault(tid, index)
            self.last_seen[tid] = index
            held = self.poses.setdefault(tid, deque(maxlen=self.keep if self.window else None))
            if (index - first) % self.stride == 0 and (self.window or len(held) < self.keep):
                due.append(k)
        if not due:
            return
        t0 = time.perf_counter()
        crops, windows = self.estimator.crops(frame, tracked.xyxy[due])
        t1 = time.perf_counter()
        xy, conf = self.estimator.from_crops(crops, windows)
        t2 = time.perf_counter()
        for j, k in enumerate(due):
            tid = int(tracked.track_id[k])
            self.poses[tid].append((index, xy[j], conf[j]))
            self.total[tid] = self.total.get(tid, 0) + 1
            self.latest[tid] = (xy[j], conf[j])
            keep_best_crop(self.best, frame, tid, tracked.xyxy[k], float(tracked.confidence[k]))
        self.timings["pose_crop"] += t1 - t0
        self.timings["pose"] += t2 - t1
        self.crops_done += len(due)

    def flush(self) -> None:
        """Nothing waits: each frame's poses are computed in ``add`` (the silhouette stage's batches need this)."""

    def ended(self, index: int, gap: int) -> list[int]:
        """Tracks last seen more than ``gap`` frames before frame ``index``."""
        return [tid for tid, last in self.last_seen.items() if index - last > gap]

    def tracks(self) -> list[int]:
        return sorted(self.first)

    def window_of(self, tid: int) -> Keypoints:
        """The poses held for a track now, without releasing them."""
        held = list(self.poses.get(tid, ()))
        if not held:
            return Keypoints(tid, np.zeros(0, np.int64), np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32))
        return Keypoints(tid, np.array([h[0] for h in held]), np.stack([h[1] for h in held]),
                         np.stack([h[2] for h in held]))

    def silhouettes_total(self, tid: int) -> int:
        """Poses ever taken for the track (the live path's count of a track's frames)."""
        return self.total.get(tid, 0)

    def take(self, tid: int) -> tuple[Keypoints, np.ndarray | None]:
        """A track's keypoints and best crop, released from memory."""
        kp = self.window_of(tid)
        for d in (self.first, self.last_seen, self.poses, self.total):
            d.pop(tid, None)
        best = self.best.pop(tid, None)
        return kp, None if best is None else best[1]

    def finish(self) -> dict[int, Keypoints]:
        return {tid: self.take(tid)[0] for tid in self.tracks()}
