"""A live camera's first half, where the models are (stages/stream_pass.py LiveCamera is the second): each frame
detected, tracked, cut into silhouettes (or keypoints), each track that is due embedded, each ended track taken with
its final feature → one CameraStep (stages/live_handoff.py). In the watch loop's process with the local engine; in
a node's Ray actor with ``watch --engine ray`` (stages/ray_cameras.py)."""
from __future__ import annotations

import time

import numpy as np

from allinone.config import RunConfig
from allinone.records import Embedding
from allinone.stages.keypoints import KeypointStage
from allinone.stages.live_handoff import CameraEnd, CameraStep, EndedTrack
from allinone.stages.silhouettes import SilhouetteStage
from allinone.stages.step import FrameStep, track_feature
from allinone.stages.track import ByteTracker


class CameraProducer:
    """A live camera's first half, where the models are: each frame detected, tracked, cut (silhouettes or
    keypoints), each track that is due embedded, each ended track taken with its final feature → one CameraStep
    (stages/live_handoff.py) for the consumer (LiveCamera). In the watch loop's process for the local engine; in a
    node's Ray actor with ``--engine ray``. ``timings``: where its stage times are added."""

    def __init__(self, fps: float, size_hw: tuple[int, int], name: str, config: RunConfig, stages,
                 timings: dict[str, float], ignore=None) -> None:
        lc = self.lc = config.live
        self.name, self.stages, self.tm = name, stages, timings
        tracker = ByteTracker(config.track, fps)
        self.poses = stages.segmenter is None and stages.pose is not None  # a keypoint gait model (GaitGraph)
        if self.poses:
            self.cutter = KeypointStage(stages.pose, config.segment.target_fps).video(fps, timings,
                                                                                      keep=lc.window, window=True)
        else:
            stage = SilhouetteStage(stages.segmenter, config.segment, config.quality, config.track.high_threshold)
            self.cutter = stage.video(fps, size_hw, None, timings, keep=lc.window, window=True)
        self.stride = self.cutter.stride
        self.frame_step = FrameStep(stages, tracker, None, timings, ignore=ignore)  # MOT rows: the consumer's
        self.spans = self.frame_step.spans
        # silhouettes an open track had at its last embedding, and that embedding's feature (saved as the track's
        # feature when it ends, not computed again)
        self.decided_at: dict[int, int] = {}
        self.last: dict[int, np.ndarray] = {}
        self.gap = tracker.buffer + 2
        self.index = -1

    def _embed_due(self, tracked) -> tuple[Embedding, ...]:
        """One gait forward for each track that has gained ``step`` silhouettes since its last one (on its latest
        ``window``)."""
        lc, new = self.lc, []
        for tid in tracked.track_id.tolist():
            n = self.cutter.silhouettes_total(tid)
            if n >= lc.window_min and (tid not in self.decided_at or n - self.decided_at[tid] >= lc.step):
                sil = self.cutter.window_of(tid)
                t4 = time.perf_counter()
                seq = sil.stacked() if self.poses else sil.aligned
                feat = np.asarray(self.stages.embedder([seq])[0], np.float32)
                self.tm["embed"] += time.perf_counter() - t4
                new.append(Embedding(self.name, tid, feat, len(sil), self.spans[tid][0], self.spans[tid][1]))
                self.decided_at[tid], self.last[tid] = n, feat
        return tuple(new)

    def _take(self, tids: list[int]) -> tuple[EndedTrack, ...]:
        """Ended tracks out of the cutter and the spans, each with its final feature."""
        out = []
        for tid in tids:
            cut, crop = self.cutter.take(tid)
            feat = self.last.pop(tid, None)
            self.decided_at.pop(tid, None)
            if feat is None:  # never decided: one forward over the whole track (as TrackCloser would make it)
                feat = track_feature(self.stages.embedder, None if self.poses else cut, cut if self.poses else None,
                                     self.tm)
            out.append(EndedTrack(tid, tuple(self.spans.pop(tid)), cut, crop, feat))
        return tuple(out)

    def __call__(self, frame: np.ndarray, arrived: float) -> CameraStep:
        """The next frame, ``arrived`` when (time.monotonic())."""
        self.index += 1
        wall = time.time() - (time.monotonic() - arrived)
        dets, tracked = self.frame_step(frame, self.index)
        self.cutter.add(frame, self.index, tracked, dets)
        self.cutter.flush()  # every frame: a decision must not wait for a batch to fill
        new = self._embed_due(tracked)
        spans = {t: tuple(s) for t, s in self.spans.items()}  # before the ended tracks leave (the rule sees them)
        ended = self.cutter.ended(self.index, self.gap)
        return CameraStep(self.index, wall, tracked, spans, new, self._take(sorted(ended)) if ended else (),
                          frame=frame, poses=dict(self.cutter.latest) if self.poses else {})

    def finish(self) -> CameraEnd:
        """The run's end: every open track ended."""
        return CameraEnd(self._take(sorted(self.spans)), dict(self.tm))


__all__ = ["CameraProducer"]
