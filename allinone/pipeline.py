"""run(config): the one loop that calls the stages in order.

Per video, in one streamed pass: frames → detections → tracks → silhouettes (quality filter, batched segmentation,
OpenGait alignment; silhouettes.py). Only boxes, masks written as PNG and 64×64 silhouettes are kept, never frames.
Then: one gait forward per track → gallery identities → threshold → decisions (match.py) → a second decode per
video to draw the result videos (render.py) → run.json built from the records (manifest.py).
"""
from __future__ import annotations

import logging
import pickle
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import manifest as mf
from .config import RunConfig
from .detect import Detector
from .errors import UserError
from .gait import GaitBackend
from .identities import gallery_identities
from .match import Matcher
from .output import RunWriter
from .records import Decision, Detections, Embedding, Identity, Silhouettes, TrackResult, VideoInfo
from .render import render_video
from .report import write_report
from .runtime import resolve_device
from .segment import Segmenter
from .silhouettes import SilhouetteStage, frame_stride
from .calibration import find_calibration
from .output import sha256_path
from .threshold import Threshold, check_threshold, resolve_threshold
from .live import stream_name
from .video import StreamSource, VideoSource, is_stream

log = logging.getLogger(__name__)


@dataclass
class Stages:
    """The models of a run, built once."""

    detector: Detector
    segmenter: Segmenter | None = None
    embedder: GaitBackend | None = None
    matcher: Matcher | None = None


@dataclass
class VideoResult:
    info: VideoInfo
    tracks: dict[int, TrackResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    silhouette_stride: int = 1

    @property
    def embeddings(self) -> dict[int, Embedding]:
        return {t: r.embedding for t, r in self.tracks.items() if r.embedding is not None}


@dataclass
class RunResult:
    run_dir: Path
    manifest: dict
    videos: list[VideoResult] = field(default_factory=list)


def _unique_names(paths: list[Path]) -> list[str]:
    """File stems, suffixed -2, -3, … where two inputs share one."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = p.stem or "video"
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        names.append(stem if n == 1 else f"{stem}-{n}")
    # a suffixed name could collide with a real stem ("a-2"): resolve by suffixing again
    out: list[str] = []
    for name in names:
        while name in out:
            name = f"{name}-x"
        out.append(name)
    return out


def _warn_repeated_inputs(paths: list[Path]) -> None:
    """One warning per file given more than once (as gallery and probe, or twice as probe)."""
    seen: dict[Path, int] = {}
    for p in paths:
        try:
            key = p.resolve()
        except OSError:
            key = p
        seen[key] = seen.get(key, 0) + 1
    for p, n in seen.items():
        if n > 1:
            log.warning("%s is given %d times (as gallery and probe, or repeated): its people will match "
                        "themselves", p, n)


def check_models_given(config: RunConfig) -> None:
    """Cheap checks of the model paths the user named, before anything loads."""
    if config.gait.model and not config.track_only:
        from .gait.backends import check_model_file
        check_model_file(config.gait.model)
    seg = config.segment.model
    if seg and not config.track_only and not Path(seg).exists():
        raise UserError("segmentation model not found", seg)


def resolve_models(config: RunConfig, gait: bool = True) -> RunConfig:
    """Fill in the default models the user did not name, from the checkpoints folder (downloading what is
    missing, unless downloads are off). Every missing file is reported in one message. ``gait`` False: no gait
    model is needed (extract)."""
    from . import weights
    want: list[str] = []
    if not config.detect.model:
        want.append("detector")
    if not config.track_only:
        if not config.segment.model:
            want.append("seg")
        if not config.gait.model and gait:
            want.append("gait")
    if not want:
        return config
    device = "cpu"  # the load checks below only prove that a fresh download loads
    checks = {
        "detector": lambda p: _build_detector(str(p), config, device),
        "seg": lambda p: _build_segmenter(str(p), device),
        "gait": lambda p: _load_gait(str(p), config, device),
    }
    paths = weights.resolve_all(want, weights.checkpoints_dir(config.checkpoints), download=config.download,
                                progress=not config.quiet, checks={k: checks[k] for k in want})
    return replace(
        config,
        detect=replace(config.detect, model=str(paths.get("detector", config.detect.model))),
        segment=replace(config.segment, model=str(paths.get("seg", config.segment.model))),
        gait=replace(config.gait, model=str(paths.get("gait", config.gait.model))),
    )


def _build_detector(model: str, config: RunConfig, device: str) -> Detector:
    from .detect import build_detector
    return build_detector(model, config.detect, device)


def _build_segmenter(model: str, device: str) -> Segmenter:
    from .segment import build_segmenter
    return build_segmenter(model, device)


def _load_gait(model: str, config: RunConfig, device: str) -> GaitBackend:
    """The gait backend for the model file: torch for OpenGait .pt checkpoints, ONNX Runtime for .onnx."""
    from .gait.backends import embedder_for
    return embedder_for(model, config.gait, device)


def build_stages(config: RunConfig, device: str) -> tuple[Stages, RunConfig]:
    """The stages, built once, and the config with what loading them settled (the 'auto' metric)."""
    detector = _build_detector(config.detect.model, config, device)
    if config.track_only:
        return Stages(detector), config
    segmenter = _build_segmenter(config.segment.model, device)
    embedder = _load_gait(config.gait.model, config, device)
    if config.match.metric == "auto":
        config = replace(config, match=replace(config.match, metric=embedder.metric))
    elif config.match.metric != embedder.metric:
        log.warning("matching with %s distances; %s (%s) is evaluated with %s in OpenGait", config.match.metric,
                    getattr(embedder, "arch", "the gait model"), config.gait.model, embedder.metric)
    if config.match.threshold is not None:
        check_threshold(config.match.threshold, config.match.metric)
    return Stages(detector, segmenter, embedder, Matcher(config.match)), config


class _TrackCloser:
    """Turns an ended track's silhouettes into its TrackResult: the OpenGait pickle, one gait forward, the .npy, the
    GEI and crop; the silhouettes are then gone from memory."""

    def __init__(self, config: RunConfig, stages: Stages, writer: RunWriter, result: VideoResult) -> None:
        self.save = config.save_silhouettes
        self.embedder = stages.embedder
        self.writer = writer
        self.result = result

    def _picture(self, rel: str, img: np.ndarray) -> str:
        import cv2
        cv2.imwrite(str(self.writer.path(rel)), img)
        return rel

    def __call__(self, tid: int, span: list[int], sil: Silhouettes | None, crop: np.ndarray | None,
                 png_dir: str | None, feat: np.ndarray | None = None) -> None:
        """``feat``: the track's embedding when it was computed already (in a batch with other tracks)."""
        r = self.result
        name = r.info.name
        tr = TrackResult(tid, span[0], span[1], span[2], crop=crop)
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
            if self.embedder is not None:
                if feat is None:
                    t0 = time.perf_counter()
                    feat = np.asarray(self.embedder([sil.aligned])[0], dtype=np.float32)  # one forward per track
                    r.timings["embed"] += time.perf_counter() - t0
                tr.files["feature"] = self.writer.write_npy(f"features/{name}/{tid:03d}.npy", feat)
                tr.embedding = Embedding(name, tid, feat, len(sil), span[0], span[1])
        r.tracks[tid] = tr


class FrameStep:
    """Detect and track one frame, time both, write its MOT rows and extend the tracks' spans (first, last, count);
    shared by the file and the live loops."""

    def __init__(self, stages: Stages, tracker, mot, timings: dict[str, float]) -> None:
        self.stages, self.tracker, self.mot, self.tm = stages, tracker, mot, timings
        self.spans: dict[int, list[int]] = {}

    def __call__(self, frame: np.ndarray, index: int, dets: Detections | None = None):
        """Track one frame; ``dets`` when the frame was already detected in a batch."""
        t1 = time.perf_counter()
        if dets is None:
            dets = self.stages.detector(frame)
        t2 = time.perf_counter()
        tracked = self.tracker(dets)
        self.tm["detect"] += t2 - t1
        self.tm["track"] += time.perf_counter() - t2
        self.mot.write(index, tracked.xyxy, tracked.confidence, tracked.track_id)
        for tid in tracked.track_id.tolist():
            span = self.spans.setdefault(tid, [index, index, 0])
            span[1], span[2] = index, span[2] + 1
        return dets, tracked


ROTATION_SAMPLES = 8  # frames spread over a video to decide whether its people stand upright
ROTATION_SCORE = 0.5  # a detection this confident counts as a person found


def choose_rotation(src: VideoSource, detector: Detector, mode: str) -> tuple[int, str]:
    """Degrees to turn ``src`` clockwise and why: the user's; 0 where the container's rotation tag already turned it
    (OpenCV applies it) or people are found upright; else the quarter turn that finds the most people."""
    from .video import rotate
    if mode != "auto":
        return int(mode), "user"
    if src.rotation_meta:
        return 0, "metadata"
    samples = src.sample(ROTATION_SAMPLES)

    def people(deg: int) -> int:
        return sum(int((detector(rotate(f, deg)).confidence >= ROTATION_SCORE).sum()) for f in samples)

    if not samples or people(0) > 0:
        return 0, "upright"
    counts = {deg: people(deg) for deg in (90, 270, 180)}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] == 0:
        return 0, "upright"  # nobody at any turn: leave it as it is
    log.warning("%s: nobody is upright in %d sample frames and there is no rotation tag; turning it %d degrees "
                "clockwise, where %d people were found (override with --rotate)", src.path, len(samples), best,
                counts[best])
    return best, "auto"


def _process_video(src: VideoSource, info: VideoInfo, config: RunConfig, stages: Stages,
                   writer: RunWriter) -> VideoResult:
    """One streamed pass over a video: detect, track, cut silhouettes, and embed each track as soon as it ends."""
    from .track import ByteTracker
    tracker = ByteTracker(config.track, src.fps)
    result = VideoResult(info=info)
    tm = result.timings
    mot = writer.mot_writer(f"tracks/{info.name}.txt")
    step = FrameStep(stages, tracker, mot, tm)
    spans = step.spans  # first, last, count per track
    png_dirs: dict[int, str] = {}
    close = _TrackCloser(config, stages, writer, result)
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
    gap = tracker.buffer + 2  # frames after which the tracker has let a lost track go
    # tracks ending together are embedded together on a GPU (8 per forward); one by one on the CPU, where batching
    # measured slower (README, "Evaluate a checkpoint")
    gait_batch = config.gait.batch or (8 if stages.embedder is not None and str(
        getattr(stages.embedder, "device", "cpu")).startswith("cuda") else 1)

    def finish(tid: int) -> None:
        sil, crop = cutter.take(tid) if cutter is not None else (None, None)
        close(tid, spans.pop(tid), sil, crop, png_dirs.pop(tid, None))

    start = time.perf_counter()
    bar = tqdm(total=src.frame_count_hint or None, desc=f"{info.role} {info.name}", unit="frame",
               disable=config.quiet, leave=False, dynamic_ncols=True)
    frames = src.frames()
    index = -1
    batch = max(1, config.detect.batch or (8 if getattr(stages.detector, "device", "cpu").startswith("cuda") else 1))
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
                    for tid in cutter.ended(index, gap):
                        finish(tid)
                bar.update(1)
            if len(chunk) < batch:
                break
        if cutter is not None and stages.embedder is not None and gait_batch > 1:
            # the tracks still in view when the video ends: their gait forwards batched (equal lengths together)
            left = sorted(spans)
            taken = [cutter.take(tid) for tid in left]
            seqs = [(i, sil.aligned) for i, (sil, _) in enumerate(taken) if len(sil)]
            t0 = time.perf_counter()
            feats = dict(zip([i for i, _ in seqs], stages.embedder([a for _, a in seqs], batch=gait_batch)))
            tm["embed"] += time.perf_counter() - t0
            for i, tid in enumerate(left):
                close(tid, spans.pop(tid), taken[i][0], taken[i][1], png_dirs.pop(tid, None),
                      None if i not in feats else np.asarray(feats[i], np.float32))
        for tid in sorted(spans):
            finish(tid)
    finally:
        mot.close()
        bar.close()
    tm["total"] = time.perf_counter() - start
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
    log.info("%s: %d frames, %d tracks, %.1f frames/s", info.name, src.count, len(result.tracks), fps)
    return result


def _gallery_and_threshold(results: list[VideoResult], config: RunConfig, stages: Stages,
                           calibrated: Threshold | None, stored: list[Identity] | None):
    """The gallery's identities (from the gallery video, or ``stored`` from a gallery file), the usable ones, and
    the run's threshold (over every embedded track in ``results``)."""
    if stored is not None:
        identities, where = stored, str(config.gallery_db)
        why = "the gallery file has no identity with enough silhouettes"
    else:
        gallery = results[0]
        identities = gallery_identities([gallery.embeddings[t] for t in sorted(gallery.embeddings)],
                                        config.identities)
        where = str(gallery.info.path)
        why = "nobody was found" if not gallery.tracks else \
            f"no track has {config.match.min_frames} usable silhouettes (--min-frames)"
    usable = stages.matcher.usable(identities)
    if not usable:
        log.warning("%s: the gallery has no usable identity (%s): every probe person will be unknown", where, why)
    every = [e for r in results for e in (r.embeddings[t] for t in sorted(r.embeddings))]
    threshold = resolve_threshold(config.match.threshold, config.match.metric, every,
                                  [m for i in usable for m in i.members], far=config.match.auto_far,
                                  min_overlap=config.match.auto_min_overlap, min_frames=config.match.min_frames,
                                  calibrated=calibrated)
    return identities, usable, threshold


def _decide(results: list[VideoResult], config: RunConfig, stages: Stages, calibrated: Threshold | None,
            stored: list[Identity] | None):
    """Identities, usable identities, the threshold and one Decision per probe track (every probe track, in
    order)."""
    identities, usable, threshold = _gallery_and_threshold(results, config, stages, calibrated, stored)
    probe_results = [r for r in results if r.info.role == "probe"]
    probes = [r.embeddings[t] for r in probe_results for t in sorted(r.embeddings)]
    decided = {(d.probe_video, d.probe_track): d for d in stages.matcher(probes, identities, threshold.value)}
    decisions = []
    for r in probe_results:
        for tid in sorted(r.tracks):
            d = decided.get((r.info.name, tid))
            # a track without a single usable silhouette never got an embedding: too short to tell
            decisions.append(d or Decision(r.info.name, tid, "too_short", None, None, "too_few_silhouettes", []))
    return identities, usable, threshold, decisions


def _live(src, name: str, results: list[VideoResult], config: RunConfig, stages: Stages, writer: RunWriter,
          calibrated: Threshold | None, stored: list[Identity] | None, gallery_name: str):
    """The stream after the gallery: identities and threshold fixed first (from the gallery alone), then decided as
    it plays. Returns the run's (identities, usable, threshold, decisions) and the stream's outputs and stats."""
    from .live import run_stream
    identities, usable, threshold = _gallery_and_threshold(results, config, stages, calibrated, stored)
    info = VideoInfo(path=src.spec, name=name, role="probe", frames=0, fps=src.fps, width=src.width,
                     height=src.height)
    result, decisions, stats, outputs = run_stream(src, info, config, stages, writer, identities, threshold,
                                                   gallery_name)
    results.append(result)
    return (identities, usable, threshold, decisions), {name: {"outputs": outputs, "stats": stats}}


def run(config: RunConfig) -> RunResult:
    """Process the gallery (video or file) and every probe video; write the run folder; return where it is, its
    manifest and the per-video results."""
    if (config.gallery is None) == (config.gallery_db is None):
        raise UserError("give a gallery video or a gallery file (--gallery or --gallery-db), one of them")
    inputs = ([(config.gallery, "gallery")] if config.gallery is not None else []) + \
        [(p, "probe") for p in config.probes]
    streams = [p for p, _ in inputs if is_stream(p)]
    if streams and (len(config.probes) != 1 or not is_stream(config.probes[0])):
        raise UserError("a live stream is the one --probe of a run (with a gallery video or --gallery-db)")
    if streams and config.track_only:
        raise UserError("--track-only is for video files, not live streams")
    names = _unique_names([Path(stream_name(str(p))) if is_stream(p) else Path(p) for p, _ in inputs])
    gallery_name = names[0] if config.gallery is not None else Path(config.gallery_db).stem
    # every input checked (a stream opened) before any model is loaded
    sources = [StreamSource(str(p), config.live.reconnect_s) if is_stream(p) else VideoSource(p) for p, _ in inputs]
    _warn_repeated_inputs([Path(p) for p, _ in inputs if not is_stream(p)])
    if config.match.threshold is not None and config.match.metric != "auto":
        check_threshold(config.match.threshold, config.match.metric)
    if config.match.calibration and not Path(config.match.calibration).is_file():
        raise UserError("calibration file not found", config.match.calibration)
    check_models_given(config)
    store = None
    if config.gallery_db is not None and not config.track_only:
        from .gallery import GalleryStore
        store = GalleryStore(config.gallery_db)
    device = resolve_device(config.device)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        with RunWriter(config.output, config.name) as writer:  # output folder and name checked before models load
            config = resolve_models(config)
            stages, config = build_stages(config, device)
            calibrated, gait_sha, stored_pictures, search_info = None, None, {}, None
            if stages.embedder is not None:
                gait_sha = sha256_path(config.gait.model)
            if store is not None:
                from .gallery import ModelInfo
                store.check_model(ModelInfo(gait_sha, config.gait.model, stages.embedder.arch, config.match.metric))
            if stages.matcher is not None and config.match.threshold is None:
                calibrated = find_calibration(config.match.calibration, config.gait.model, gait_sha,
                                              config.match.metric)
            results: list[VideoResult] = []
            for src, (path, role), name in zip(sources, inputs, names):
                if is_stream(path):
                    continue
                degrees, basis = choose_rotation(src, stages.detector, config.rotate)
                src.set_rotation(degrees)
                info = VideoInfo(path=Path(path), name=name, role=role, frames=src.frame_count_hint,
                                 fps=src.fps, width=src.width, height=src.height, rotation=degrees,
                                 rotation_basis=basis)
                results.append(_process_video(src, info, config, stages, writer))

            decision, live, stored = None, {}, None
            if store is not None:  # all identities of a small gallery; an index shortlist's of a large one
                probes = [e for r in results for e in r.embeddings.values()]
                stored, search_info = store.candidates(probes, config.search)
                stored_pictures = store.pictures([m.track_id for i in stored for m in i.members[:1]])
            if streams:
                decision, live = _live(sources[-1], names[-1], results, config, stages, writer, calibrated, stored,
                                       gallery_name)
                match_s = 0.0
            elif stages.matcher is not None:
                t0 = time.perf_counter()
                decision = _decide(results, config, stages, calibrated, stored)
                match_s = time.perf_counter() - t0

            outputs: dict[str, dict[str, str]] = {}
            for r in results:
                if r.info.name in live:
                    outputs[r.info.name] = live[r.info.name]["outputs"]
                    continue
                identities, decisions = (decision[0], decision[3]) if decision else (None, None)
                outputs[r.info.name] = render_video(
                    r.info, writer.dir / f"tracks/{r.info.name}.txt", writer, gallery_name, identities, decisions,
                    config.quiet, r.timings) if config.render else {}
            videos = [mf.video_entry(r.info, r.tracks, outputs[r.info.name], r.timings,
                                     r.info.fps / r.silhouette_stride if stages.segmenter else None)
                      for r in results]
            extra: dict = {"gallery_db": str(config.gallery_db), "search": search_info} \
                if config.gallery_db is not None else {}
            if live:
                extra["live"] = {name: x["stats"] for name, x in live.items()}
            if decision is not None:
                identities, usable, threshold, decisions = decision
                spans = {(r.info.name, t): (tr.first_frame + 1, tr.last_frame + 1) for r in results
                         if r.info.role == "probe" for t, tr in r.tracks.items()}
                pictures = {(r.info.name, t): {k: tr.files[k] for k in ("crop", "gei") if k in tr.files}
                            for r in results for t, tr in r.tracks.items()}
                for tid, blobs in stored_pictures.items():
                    for key, blob in zip(("crop", "gei"), blobs):
                        if blob:
                            rel = f"pictures/gallery/{tid:03d}_{key}.png"
                            writer.path(rel).write_bytes(blob)
                            pictures.setdefault(("gallery", tid), {})[key] = rel
                extra.update(mf.decisions_entries(identities, usable, threshold, decisions, writer, spans,
                                                  pictures))
                extra["timings_s"] = {"match": round(match_s, 4)}
            manifest = mf.run_manifest(created, config, device, stages, videos, extra, gait_sha)
            if decision is not None:
                manifest["report"] = write_report(writer.dir, manifest)
            run_dir = writer.finalize(manifest)
    finally:
        if store is not None:
            store.close()
    log.info("run written to %s", run_dir)
    return RunResult(run_dir=run_dir, manifest=manifest, videos=results)


__all__ = ["RunResult", "Stages", "build_stages", "check_models_given", "frame_stride", "resolve_models", "run"]
