"""One streamed pass over a video file: detect, track, cut silhouettes, embed each track as soon as it ends.

FilePass holds one video's state (tracker, silhouette and pose stages, spans, the tracked video being drawn) and
takes frames one at a time (``step``); ``close`` embeds the tracks still in view and returns the VideoResult.
``process_video`` drives it over a file, detecting frames in batches where that pays."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from allinone.config import RunConfig
from allinone.errors import UserError
from allinone.io.devices import default_batch
from allinone.io.run_folder import RunWriter
from allinone.io.video import VideoSource
from allinone.records import Detections, VideoInfo
from allinone.stages.build import Stages, skeleton_channels
from allinone.stages.keypoints import KeypointStage
from allinone.stages.silhouettes import SilhouetteStage
from allinone.stages.step import FrameStep, TrackCloser, VideoResult
from allinone.stages.track import ByteTracker
from allinone.results.words import count

log = logging.getLogger(__name__)


class FilePass:
    """One video file's pass: frames in (``step``), a VideoResult out (``close``). ``tracked_video``: a
    run-relative path to draw the tracked video to in this same pass (timed as ``draw``)."""

    def __init__(self, src: VideoSource, info: VideoInfo, config: RunConfig, stages: Stages, writer: RunWriter,
                 tracked_video: str | None = None) -> None:
        self.src, self.config, self.stages, self.writer = src, config, stages, writer
        self.tracker = ByteTracker(config.track, src.fps)
        self.result = VideoResult(info=info)
        self.tm = self.result.timings
        self.mot = writer.mot_writer(f"tracks/{info.name}.txt")
        self.step_frame = FrameStep(stages, self.tracker, self.mot, self.tm, self.result.together)
        self.spans = self.step_frame.spans  # first, last, count per track
        self.png_dirs: dict[int, str] = {}
        self.closer = TrackCloser(config, stages, writer, self.result)
        self.cutter = self._silhouette_cutter() if stages.segmenter is not None else None
        self.poser = KeypointStage(stages.pose, config.segment.target_fps).video(src.fps, self.tm) \
            if stages.pose is not None and not config.track_only else None
        # keypoint models (GaitGraph, and SkeletonGait++'s maps beside silhouettes) are embedded as each track closes
        self.reads_keypoints = getattr(stages.embedder, "input", "silhouettes") == "keypoints" or \
            skeleton_channels(stages.embedder)
        self.ends = self.cutter if self.cutter is not None else self.poser  # what tells when a track has ended
        self.gap = self.tracker.buffer + 2  # frames after which the tracker has let a lost track go
        # tracks ending together are embedded together on a GPU, one by one on the CPU
        self.gait_batch = default_batch(config.gait.batch, getattr(stages.embedder, "device", "cpu"))
        self.drawer = None
        if tracked_video is not None:
            from allinone.results.render import TrackedVideo
            self.drawer = TrackedVideo(writer.path(tracked_video), src.fps, (src.width, src.height),
                                       "G" if info.role == "gallery" else "P")
        self.index = -1
        self.start = time.perf_counter()

    def _silhouette_cutter(self):
        config, info = self.config, self.result.info
        stage = SilhouetteStage(self.stages.segmenter, config.segment, config.quality, config.track.high_threshold)
        png = None
        if config.save_silhouettes == "png":
            def png(tid: int, index: int) -> str:
                rel = f"silhouettes/{info.name}/{tid:03d}/{index + 1:06d}.png"
                self.png_dirs[tid] = str(Path(rel).parent)
                return str(self.writer.path(rel))
        cutter = stage.video(self.src.fps, (self.src.height, self.src.width), png, self.tm,
                             keep=config.gait.max_frames)
        self.result.silhouette_stride = cutter.stride
        return cutter

    def _finish(self, tid: int, sil=None, crop=None, feat=None) -> None:
        if self.cutter is not None and sil is None:
            sil, crop = self.cutter.take(tid)
        kp = None
        if self.poser is not None:
            kp, kp_crop = self.poser.take(tid)
            crop = crop if crop is not None else kp_crop
        self.closer(tid, self.spans.pop(tid), sil, crop, self.png_dirs.pop(tid, None), feat, kp)

    def step(self, frame: np.ndarray, dets: Detections | None = None) -> None:
        """The next frame (``dets``: its detections when it was detected in a batch)."""
        self.index += 1
        index = self.index
        dets, tracked = self.step_frame(frame, index, dets)
        if self.cutter is not None:
            self.cutter.add(frame, index, tracked, dets)
        if self.poser is not None:
            self.poser.add(frame, index, tracked)
        if self.ends is not None:
            for tid in self.ends.ended(index, self.gap):
                self._finish(tid)
        if self.drawer is not None:  # after the crops were cut: drawing is in place
            t2 = time.perf_counter()
            self.drawer(frame, tracked.xyxy, tracked.track_id, None if self.poser is None else self.poser.latest)
            self.tm["draw"] += time.perf_counter() - t2

    def _embed_left_batched(self) -> None:
        """The tracks still in view when the video ends: their gait forwards batched (equal lengths together)."""
        left = sorted(self.spans)
        taken = [self.cutter.take(tid) for tid in left]
        seqs = [(i, sil.aligned) for i, (sil, _) in enumerate(taken) if len(sil)]
        t0 = time.perf_counter()
        feats = dict(zip([i for i, _ in seqs], self.stages.embedder([a for _, a in seqs], batch=self.gait_batch)))
        self.tm["embed"] += time.perf_counter() - t0
        for i, tid in enumerate(left):
            self._finish(tid, taken[i][0], taken[i][1],
                         None if i not in feats else np.asarray(feats[i], np.float32))

    def close(self) -> VideoResult:
        """The tracks still in view embedded and saved, the tracked video finished; the pass's VideoResult."""
        try:
            if self.cutter is not None and self.stages.embedder is not None and self.gait_batch > 1 \
                    and not self.reads_keypoints:
                self._embed_left_batched()
            for tid in sorted(self.spans):
                self._finish(tid)
            if self.drawer is not None:
                t2 = time.perf_counter()
                self.drawer.close()  # the encoder's last frames
                self.tm["draw"] += time.perf_counter() - t2
                self.drawer = None
        finally:
            self.abandon()
        return self._result()

    def abandon(self) -> None:
        """Release the files of a pass that failed (or was closed): the tracks file, an unfinished drawing."""
        self.mot.close()
        if self.drawer is not None:
            self.drawer.discard()
            self.drawer = None

    def _result(self) -> VideoResult:
        src, result, tm = self.src, self.result, self.tm
        tm["total"] = time.perf_counter() - self.start
        result.pose_crops = self.poser.crops_done if self.poser is not None else 0
        if src.count == 0:
            raise UserError("video has no frames that can be decoded", src.path)
        short = {tid for tid, t in result.tracks.items() if t.n_frames < self.config.track.min_track_frames}
        if short:
            self.mot.drop_tracks(short)
            for tid in short:
                for rel in result.tracks.pop(tid).files.values():
                    target = self.writer.dir / rel
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        result.tracks = dict(sorted(result.tracks.items()))
        result.info = VideoInfo(**{**result.info.__dict__, "frames": src.count})
        if not result.tracks:
            log.warning("%s: nobody was found in this video", src.path)
        fps = src.count / tm["total"] if tm["total"] > 0 else 0.0
        log.info("%s: %s, %s, %.1f frames/s", result.info.name, count(src.count, "frame"),
                 count(len(result.tracks), "track"), fps)
        return result


def process_video(src: VideoSource, info: VideoInfo, config: RunConfig, stages: Stages,
                  writer: RunWriter, tracked_video: str | None = None) -> VideoResult:
    """One streamed pass over a video file (FilePass), its frames detected in batches of the detector's batch."""
    one = FilePass(src, info, config, stages, writer, tracked_video)
    bar = tqdm(total=src.frame_count_hint or None, desc=f"{info.role} {info.name}", unit="frame",
               disable=config.quiet, leave=False, dynamic_ncols=True)
    frames = src.frames()
    batch = default_batch(config.detect.batch, getattr(stages.detector, "device", "cpu"))
    try:
        while True:
            t0 = time.perf_counter()
            chunk = [f for f in (next(frames, None) for _ in range(batch)) if f is not None]
            t1 = time.perf_counter()
            one.tm["decode_wait"] += t1 - t0
            if not chunk:
                break
            detected = stages.detector.batch(chunk) if batch > 1 else [None] * len(chunk)
            one.tm["detect"] += time.perf_counter() - t1
            for frame, dets in zip(chunk, detected):
                one.step(frame, dets)
                bar.update(1)
            if len(chunk) < batch:
                break
    except BaseException:
        one.abandon()
        raise
    finally:
        bar.close()
    return one.close()
