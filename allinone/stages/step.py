"""What files and streams share per frame and per track: FrameStep (detect, track, MOT rows, spans), TrackCloser
(an ended track's pickle, embedding, pictures) and the VideoResult they fill."""
from __future__ import annotations

import pickle
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from allinone.config import RunConfig
from allinone.decide.impostors import CoVisibility
from allinone.io.run_folder import RunWriter
from allinone.records import Detections, Embedding, Keypoints, Silhouettes, TrackResult, VideoInfo
from allinone.stages.build import Stages, skeleton_channels


@dataclass
class VideoResult:
    info: VideoInfo
    tracks: dict[int, TrackResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    silhouette_stride: int = 1
    together: CoVisibility = field(default_factory=CoVisibility)  # tracks seen in one frame (impostor evidence)
    outputs: dict[str, str] = field(default_factory=dict)  # run-relative files written during the pass
    pose_crops: int = 0  # person crops the pose model saw (timings["pose"] is their time)

    @property
    def embeddings(self) -> dict[int, Embedding]:
        return {t: r.embedding for t, r in self.tracks.items() if r.embedding is not None}


def skeleton_sequence(sil: Silhouettes, kp: Keypoints | None) -> np.ndarray | None:
    """SkeletonGait++'s input for one track: each aligned silhouette with the skeleton maps of the pose taken in its
    own frame, uint8 [T', 3, 64, 64] (limbs, joints, silhouette). The pose stage never drops a frame and samples at
    a stride that divides the silhouettes', so every silhouette normally has its pose; one that has none is left
    out. The maps are made over the kept frames (OpenGait fills missing joints from the track's nearest frames).
    None when no silhouette has a pose."""
    from allinone.gait.skeleton_maps import skeleton_input, skeleton_maps

    if kp is None or not len(kp) or not len(sil):
        return None
    at = np.clip(np.searchsorted(kp.frames, sil.frames), 0, len(kp.frames) - 1)
    has = kp.frames[at] == sil.frames
    if not has.any():
        return None
    at = at[has]
    return skeleton_input(skeleton_maps(kp.xy[at], kp.confidence[at]), sil.aligned[has])


def track_feature(embedder, sil: Silhouettes | None, kp: Keypoints | None,
                  timings: dict[str, float]) -> np.ndarray | None:
    """The one gait forward over a whole ended track that TrackCloser makes when it is given no feature: a keypoint
    model (GaitGraph) reads ``kp``; the others ``sil`` (SkeletonGait++ with the skeleton maps of ``kp``). None where
    the model has nothing to read. Apart from TrackCloser so that a live camera's producer (on another machine,
    with ``--engine ray``) computes it where the models are."""
    if embedder is None:
        return None
    if getattr(embedder, "input", "silhouettes") == "keypoints":
        seq = kp.stacked() if kp is not None and len(kp) else None
    elif sil is None or not len(sil):
        seq = None
    else:
        seq = skeleton_sequence(sil, kp) if skeleton_channels(embedder) else sil.aligned
    if seq is None:
        return None
    t0 = time.perf_counter()
    feat = np.asarray(embedder([seq])[0], dtype=np.float32)
    timings["embed"] += time.perf_counter() - t0
    return feat


class TrackCloser:
    """Turns an ended track's silhouettes into its TrackResult: the OpenGait pickle, one gait forward, the .npy, the
    GEI and crop; the silhouettes are then gone from memory."""

    def __init__(self, config: RunConfig, stages: Stages, writer: RunWriter, result: VideoResult) -> None:
        self.save = config.save_silhouettes
        self.save_keypoints = config.pose.save
        self.embedder = stages.embedder
        self.reads_keypoints = getattr(stages.embedder, "input", "silhouettes") == "keypoints"
        self.skeleton = skeleton_channels(stages.embedder)  # SkeletonGait++: maps beside the silhouettes
        self.writer = writer
        self.result = result

    def _picture(self, rel: str, img: np.ndarray) -> str:
        import cv2
        cv2.imwrite(str(self.writer.path(rel)), img)
        return rel

    def _keypoints(self, tr: TrackResult, kp: Keypoints, feat: np.ndarray | None) -> None:
        """A track's poses: kept for drawing, saved as OpenGait's pose pickle if asked, embedded by a keypoint
        model (GaitGraph) in place of silhouettes."""
        name, tid = self.result.info.name, tr.track_id
        tr.keypoints = kp
        if self.save_keypoints and len(kp):
            rel = f"keypoints/{name}/{tid:03d}.pkl"
            with open(self.writer.path(rel), "wb") as fh:
                pickle.dump(kp.stacked(), fh)
            tr.files["keypoints_pkl"] = rel
        if not self.reads_keypoints:
            return
        tr.n_silhouettes = len(kp)  # the frames the gait model reads
        if self.embedder is None or not len(kp):
            return
        if feat is None:
            feat = track_feature(self.embedder, None, kp, self.result.timings)
        tr.files["feature"] = self.writer.write_npy(f"features/{name}/{tid:03d}.npy", feat)
        tr.embedding = Embedding(name, tid, feat, len(kp), tr.first_frame, tr.last_frame)

    def __call__(self, tid: int, span: list[int], sil: Silhouettes | None, crop: np.ndarray | None,
                 png_dir: str | None, feat: np.ndarray | None = None, kp: Keypoints | None = None) -> None:
        """``feat``: the track's embedding when it was computed already (in a batch with other tracks); ``kp``:
        its keypoints, with a pose stage."""
        r = self.result
        name = r.info.name
        tr = TrackResult(tid, span[0], span[1], span[2], crop=crop)
        if kp is not None:
            self._keypoints(tr, kp, feat)
        if png_dir:
            tr.files["silhouettes_png_dir"] = png_dir
        if sil is not None:
            tr.n_silhouettes, tr.dropped = len(sil), dict(sil.dropped)
        if crop is not None:
            tr.files["crop"] = self._picture(f"pictures/{name}/{tid:03d}_crop.jpg", crop)
        if sil is not None and len(sil):
            tr.gei = np.round(sil.aligned.mean(axis=0)).astype(np.uint8)
            tr.files["gei"] = self._picture(f"pictures/{name}/{tid:03d}_gei.png", tr.gei)
            if self.save != "none":
                rel = f"silhouettes/{name}/{tid:03d}.pkl"
                with open(self.writer.path(rel), "wb") as fh:
                    pickle.dump(sil.aligned, fh)
                tr.files["silhouettes_pkl"] = rel
            if self.embedder is not None and not self.reads_keypoints:
                seq = skeleton_sequence(sil, kp) if self.skeleton else sil.aligned
                if seq is not None:  # None: SkeletonGait++ without a pose for any of the track's silhouettes
                    if feat is None:
                        feat = track_feature(self.embedder, sil, kp, r.timings)  # one forward per track
                    tr.files["feature"] = self.writer.write_npy(f"features/{name}/{tid:03d}.npy", feat)
                    tr.embedding = Embedding(name, tid, feat, len(seq), span[0], span[1])
        r.tracks[tid] = tr


class FrameStep:
    """Detect and track one frame, time both, write its MOT rows and extend the tracks' spans (first, last, count);
    shared by the file and the live loops."""

    def __init__(self, stages: Stages, tracker, mot, timings: dict[str, float],
                 together: CoVisibility | None = None, ignore=None) -> None:
        """``ignore(xyxy) → bool mask``: detections to leave out before tracking (a camera's regions to ignore)."""
        self.stages, self.tracker, self.mot, self.tm = stages, tracker, mot, timings
        self.spans: dict[int, list[int]] = {}
        self.together, self.ignore = together, ignore

    def __call__(self, frame: np.ndarray, index: int, dets: Detections | None = None):
        """Track one frame; ``dets`` when the frame was already detected in a batch."""
        t1 = time.perf_counter()
        if dets is None:
            dets = self.stages.detector(frame)
        if self.ignore is not None and len(dets.xyxy):
            keep = ~self.ignore(dets.xyxy)
            dets = Detections(dets.xyxy[keep], dets.confidence[keep])
        t2 = time.perf_counter()
        tracked = self.tracker(dets)
        self.tm["detect"] += t2 - t1
        self.tm["track"] += time.perf_counter() - t2
        if self.mot is not None:  # (None: a live camera's producer, whose consumer writes them)
            self.mot.write(index, tracked.xyxy, tracked.confidence, tracked.track_id)
        if self.together is not None:
            self.together.add(tracked.xyxy, tracked.track_id)
        for tid in tracked.track_id.tolist():
            span = self.spans.setdefault(tid, [index, index, 0])
            span[1], span[2] = index, span[2] + 1
        return dets, tracked
