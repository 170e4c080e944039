"""One streamed pass over a video file: detect, track, cut silhouettes, embed each track as soon as it ends."""
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
from allinone.records import VideoInfo
from allinone.stages.build import Stages, skeleton_channels
from allinone.stages.keypoints import KeypointStage
from allinone.stages.silhouettes import SilhouetteStage
from allinone.stages.step import FrameStep, TrackCloser, VideoResult
from allinone.stages.track import ByteTracker
from allinone.results.words import count

log = logging.getLogger(__name__)


def process_video(src: VideoSource, info: VideoInfo, config: RunConfig, stages: Stages,
                  writer: RunWriter, tracked_video: str | None = None) -> VideoResult:
    """One streamed pass over a video: detect, track, cut silhouettes, and embed each track as soon as it ends.
    ``tracked_video``: a run-relative path to draw the tracked video to in this same pass (timed as ``draw``)."""
    tracker = ByteTracker(config.track, src.fps)
    result = VideoResult(info=info)
    tm = result.timings
    mot = writer.mot_writer(f"tracks/{info.name}.txt")
    step = FrameStep(stages, tracker, mot, tm, result.together)
    spans = step.spans  # first, last, count per track
    png_dirs: dict[int, str] = {}
    close = TrackCloser(config, stages, writer, result)
    cutter = None
    if stages.segmenter is not None:
        stage = SilhouetteStage(stages.segmenter, config.segment, config.quality, config.track.high_threshold)
        png = None
        if config.save_silhouettes == "png":
            def png(tid: int, index: int) -> str:
                rel = f"silhouettes/{info.name}/{tid:03d}/{index + 1:06d}.png"
                png_dirs[tid] = str(Path(rel).parent)
                return str(writer.path(rel))
        cutter = stage.video(src.fps, (src.height, src.width), png, tm, keep=config.gait.max_frames)
        result.silhouette_stride = cutter.stride
    poser = None
    if stages.pose is not None and not config.track_only:
        poser = KeypointStage(stages.pose, config.segment.target_fps).video(src.fps, tm)
    # keypoint models (GaitGraph, and SkeletonGait++'s maps beside silhouettes) are embedded as each track closes
    reads_keypoints = getattr(stages.embedder, "input", "silhouettes") == "keypoints" or skeleton_channels(
        stages.embedder)
    ends = cutter if cutter is not None else poser  # what tells when a track has ended
    gap = tracker.buffer + 2  # frames after which the tracker has let a lost track go
    # tracks ending together are embedded together on a GPU, one by one on the CPU
    gait_batch = default_batch(config.gait.batch, getattr(stages.embedder, "device", "cpu"))

    def finish(tid: int, sil=None, crop=None, feat=None) -> None:
        if cutter is not None and sil is None:
            sil, crop = cutter.take(tid)
        kp = None
        if poser is not None:
            kp, kp_crop = poser.take(tid)
            crop = crop if crop is not None else kp_crop
        close(tid, spans.pop(tid), sil, crop, png_dirs.pop(tid, None), feat, kp)

    drawer = None
    if tracked_video is not None:
        from allinone.results.render import TrackedVideo
        drawer = TrackedVideo(writer.path(tracked_video), src.fps, (src.width, src.height),
                              "G" if info.role == "gallery" else "P")
    start = time.perf_counter()
    bar = tqdm(total=src.frame_count_hint or None, desc=f"{info.role} {info.name}", unit="frame",
               disable=config.quiet, leave=False, dynamic_ncols=True)
    frames = src.frames()
    index = -1
    batch = default_batch(config.detect.batch, getattr(stages.detector, "device", "cpu"))
    try:
        while True:
            t0 = time.perf_counter()
            chunk = [f for f in (next(frames, None) for _ in range(batch)) if f is not None]
            t1 = time.perf_counter()
            tm["decode_wait"] += t1 - t0
            if not chunk:
                break
            detected = stages.detector.batch(chunk) if batch > 1 else [None]
            tm["detect"] += time.perf_counter() - t1
            for frame, dets in zip(chunk, detected):
                index += 1
                dets, tracked = step(frame, index, dets)
                if cutter is not None:
                    cutter.add(frame, index, tracked, dets)
                if poser is not None:
                    poser.add(frame, index, tracked)
                if ends is not None:
                    for tid in ends.ended(index, gap):
                        finish(tid)
                if drawer is not None:  # after the crops were cut: drawing is in place
                    t2 = time.perf_counter()
                    drawer(frame, tracked.xyxy, tracked.track_id, None if poser is None else poser.latest)
                    tm["draw"] += time.perf_counter() - t2
                bar.update(1)
            if len(chunk) < batch:
                break
        if cutter is not None and stages.embedder is not None and gait_batch > 1 and not reads_keypoints:
            # the tracks still in view when the video ends: their gait forwards batched (equal lengths together)
            left = sorted(spans)
            taken = [cutter.take(tid) for tid in left]
            seqs = [(i, sil.aligned) for i, (sil, _) in enumerate(taken) if len(sil)]
            t0 = time.perf_counter()
            feats = dict(zip([i for i, _ in seqs], stages.embedder([a for _, a in seqs], batch=gait_batch)))
            tm["embed"] += time.perf_counter() - t0
            for i, tid in enumerate(left):
                finish(tid, taken[i][0], taken[i][1], None if i not in feats else np.asarray(feats[i], np.float32))
        for tid in sorted(spans):
            finish(tid)
        if drawer is not None:
            t2 = time.perf_counter()
            drawer.close()  # the encoder's last frames
            tm["draw"] += time.perf_counter() - t2
            drawer = None
    finally:
        mot.close()
        bar.close()
        if drawer is not None:
            drawer.discard()
    tm["total"] = time.perf_counter() - start
    result.pose_crops = poser.crops_done if poser is not None else 0
    if src.count == 0:
        raise UserError("video has no frames that can be decoded", src.path)
    short = {tid for tid, t in result.tracks.items() if t.n_frames < config.track.min_track_frames}
    if short:
        mot.drop_tracks(short)
        for tid in short:
            for rel in result.tracks.pop(tid).files.values():
                target = writer.dir / rel
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    result.tracks = dict(sorted(result.tracks.items()))
    result.info = VideoInfo(**{**info.__dict__, "frames": src.count})
    if not result.tracks:
        log.warning("%s: nobody was found in this video", src.path)
    fps = src.count / tm["total"] if tm["total"] > 0 else 0.0
    log.info("%s: %s, %s, %.1f frames/s", info.name, count(src.count, "frame"), count(len(result.tracks), "track"),
             fps)
    return result
