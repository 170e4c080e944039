"""run(config): the one loop that calls the stages in order.

Per video, in one streamed pass: frames → detections → tracks → silhouettes (quality filter, batched segmentation,
OpenGait alignment; silhouettes.py). Only boxes, masks written as PNG and 64×64 silhouettes are kept, never frames.
Then: one gait forward per track → gallery identities → threshold → decisions (match.py) → a second decode per
video to draw the result videos (render.py) → run.json built from the records (manifest.py).
"""
from __future__ import annotations

import logging
import pickle
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
from .records import Decision, Embedding, Silhouettes, Track, VideoInfo
from .render import render_video
from .runtime import resolve_device
from .segment import Segmenter
from .silhouettes import SilhouetteStage, frame_stride
from .calibration import find_calibration
from .output import sha256_path
from .threshold import Threshold, check_threshold, resolve_threshold
from .video import VideoSource

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
    tracks: dict[int, Track]
    silhouettes: dict[int, Silhouettes] = field(default_factory=dict)
    embeddings: dict[int, Embedding] = field(default_factory=dict)
    files: dict[int, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))  # per track, run-relative
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    silhouette_stride: int = 1


@dataclass
class RunResult:
    run_dir: Path
    manifest: dict


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
    gait = config.gait.model
    if gait and not config.track_only:
        p = Path(gait)
        if p.is_dir():
            raise UserError("is a directory, not a gait model file (an OpenGait .pt checkpoint or an .onnx file)", p)
        if not p.exists():
            raise UserError("gait model not found", p)
    seg = config.segment.model
    if seg and not config.track_only and not Path(seg).exists():
        raise UserError("segmentation model not found", seg)


def resolve_models(config: RunConfig) -> RunConfig:
    """Fill in the default models the user did not name, from the checkpoints folder (downloading what is
    missing, unless downloads are off). Every missing file is reported in one message."""
    from . import weights
    want: list[str] = []
    if not config.detect.model:
        want.append("detector")
    if not config.track_only:
        if not config.segment.model:
            want.append("seg")
        if not config.gait.model:
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


def _process_video(src: VideoSource, info: VideoInfo, config: RunConfig, stages: Stages,
                   writer: RunWriter) -> VideoResult:
    """One streamed pass over a video: detect, track, and (when a segmenter is given) cut silhouettes."""
    from .track import ByteTracker
    tracker = ByteTracker(config.track, src.fps)
    result = VideoResult(info=info, tracks={})
    tm = result.timings
    cutter = None
    if stages.segmenter is not None:
        stage = SilhouetteStage(stages.segmenter, config.segment, config.quality, config.track.high_threshold)

        def png(tid: int, index: int) -> str:
            rel = f"silhouettes/{info.name}/{tid:03d}/{index + 1:06d}.png"
            result.files[tid]["silhouettes_png_dir"] = str(Path(rel).parent)
            return str(writer.path(rel))

        cutter = stage.video(src.fps, (src.height, src.width), png, tm)
        result.silhouette_stride = cutter.stride
    start = time.perf_counter()
    bar = tqdm(total=src.frame_count_hint or None, desc=f"{info.role} {info.name}", unit="frame",
               disable=config.quiet, leave=False, dynamic_ncols=True)
    frames = src.frames()
    index = -1
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        t1 = time.perf_counter()
        tm["decode_wait"] += t1 - t0
        if frame is None:
            break
        index += 1
        dets = stages.detector(frame)
        t2 = time.perf_counter()
        tracked = tracker(dets)
        t3 = time.perf_counter()
        tm["detect"] += t2 - t1
        tm["track"] += t3 - t2
        for box, score, tid in zip(tracked.xyxy, tracked.confidence, tracked.track_id):
            result.tracks.setdefault(int(tid), Track(int(tid))).add(index, box, float(score))
        if cutter is not None:
            cutter.add(frame, index, tracked, dets)
        bar.update(1)
    if cutter is not None:
        result.silhouettes = cutter.finish()
    bar.close()
    tm["total"] = time.perf_counter() - start
    if src.count == 0:
        raise UserError("video has no frames that can be decoded", src.path)
    short = [tid for tid, t in result.tracks.items() if t.n_frames < config.track.min_track_frames]
    for tid in short:
        del result.tracks[tid]
        result.silhouettes.pop(tid, None)
        result.files.pop(tid, None)
        png_dir = writer.dir / f"silhouettes/{info.name}/{tid:03d}"
        if png_dir.exists():
            import shutil
            shutil.rmtree(png_dir)
    result.info = VideoInfo(**{**info.__dict__, "frames": src.count})
    if not result.tracks:
        log.warning("%s: nobody was found in this video", src.path)
    fps = src.count / tm["total"] if tm["total"] > 0 else 0.0
    log.info("%s: %d frames, %d tracks, %.1f frames/s", info.name, src.count, len(result.tracks), fps)
    return result


def _embed(results: list[VideoResult], stages: Stages, writer: RunWriter, quiet: bool = True) -> None:
    """One gait forward per track with silhouettes; features saved as .npy, aligned sequences as OpenGait pickles."""
    items: list[tuple[VideoResult, int, np.ndarray]] = []
    for r in results:
        for tid in sorted(r.tracks):
            sils = r.silhouettes.get(tid)
            if sils is not None and len(sils):
                rel = f"silhouettes/{r.info.name}/{tid:03d}.pkl"
                with open(writer.path(rel), "wb") as fh:
                    pickle.dump(sils.aligned, fh)
                r.files[tid]["silhouettes_pkl"] = rel
                items.append((r, tid, sils.aligned))
    if stages.embedder is None:
        return
    for r, tid, seq in tqdm(items, desc="gait", unit="track", disable=quiet, leave=False, dynamic_ncols=True):
        t0 = time.perf_counter()
        feat = np.asarray(stages.embedder([seq])[0], dtype=np.float32)  # one forward per track
        r.timings["embed"] += time.perf_counter() - t0  # charged to the track's own video
        r.files[tid]["feature"] = writer.write_npy(f"features/{r.info.name}/{tid:03d}.npy", feat)
        t = r.tracks[tid]
        r.embeddings[tid] = Embedding(r.info.name, tid, feat, len(seq), t.first_frame, t.last_frame)


def _decide(results: list[VideoResult], config: RunConfig, stages: Stages, calibrated: Threshold | None):
    """Identities of the gallery, the threshold and one Decision per probe track (every probe track, in order)."""
    gallery = results[0]
    identities = gallery_identities([gallery.embeddings[t] for t in sorted(gallery.embeddings)], config.identities)
    usable = stages.matcher.usable(identities)
    if not usable:
        why = "nobody was found" if not gallery.tracks else \
            f"no track has {config.match.min_frames} usable silhouettes (--min-frames)"
        log.warning("%s: the gallery has no usable identity (%s): every probe person will be unknown",
                    gallery.info.path, why)
    every = [e for r in results for e in (r.embeddings[t] for t in sorted(r.embeddings))]
    threshold = resolve_threshold(config.match.threshold, config.match.metric, every,
                                  [m for i in usable for m in i.members], far=config.match.auto_far,
                                  min_overlap=config.match.auto_min_overlap, min_frames=config.match.min_frames,
                                  calibrated=calibrated)
    probes = [r.embeddings[t] for r in results[1:] for t in sorted(r.embeddings)]
    decided = {(d.probe_video, d.probe_track): d for d in stages.matcher(probes, identities, threshold.value)}
    decisions = []
    for r in results[1:]:
        for tid in sorted(r.tracks):
            d = decided.get((r.info.name, tid))
            # a track without a single usable silhouette never got an embedding: too short to tell
            decisions.append(d or Decision(r.info.name, tid, "too_short", None, None, "too_few_silhouettes", []))
    return identities, usable, threshold, decisions


def run(config: RunConfig) -> RunResult:
    """Process the gallery and every probe video; write the run folder; return where it is and its manifest."""
    inputs = [(config.gallery, "gallery")] + [(p, "probe") for p in config.probes]
    names = _unique_names([Path(p) for p, _ in inputs])
    sources = [VideoSource(p) for p, _ in inputs]  # every input checked before any model is loaded
    _warn_repeated_inputs([Path(p) for p, _ in inputs])
    if config.match.threshold is not None and config.match.metric != "auto":
        check_threshold(config.match.threshold, config.match.metric)
    if config.match.calibration and not Path(config.match.calibration).is_file():
        raise UserError("calibration file not found", config.match.calibration)
    check_models_given(config)
    device = resolve_device(config.device)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with RunWriter(config.output, config.name) as writer:  # output folder and name checked before models load
        config = resolve_models(config)
        stages, config = build_stages(config, device)
        calibrated = None
        if stages.matcher is not None and config.match.threshold is None:
            calibrated = find_calibration(config.match.calibration, config.gait.model,
                                          sha256_path(config.gait.model), config.match.metric)
        results: list[VideoResult] = []
        for src, (path, role), name in zip(sources, inputs, names):
            info = VideoInfo(path=Path(path), name=name, role=role, frames=src.frame_count_hint,
                             fps=src.fps, width=src.width, height=src.height)
            r = _process_video(src, info, config, stages, writer)
            writer.write_mot(f"tracks/{name}.txt", [r.tracks[t] for t in sorted(r.tracks)])
            results.append(r)

        _embed(results, stages, writer, config.quiet)
        decision = None
        if stages.matcher is not None:
            t0 = time.perf_counter()
            decision = _decide(results, config, stages, calibrated)
            match_s = time.perf_counter() - t0

        outputs: dict[str, dict[str, str]] = {}
        for r in results:
            identities, decisions = (decision[0], decision[3]) if decision else (None, None)
            outputs[r.info.name] = render_video(r.info, r.tracks, writer, names[0], identities,
                                                decisions, config.quiet, r.timings)
        videos = [mf.video_entry(r.info, r.tracks, r.silhouettes, r.files, outputs[r.info.name], r.timings,
                                 r.info.fps / r.silhouette_stride) for r in results]
        extra = {}
        if decision is not None:
            identities, usable, threshold, decisions = decision
            spans = {(r.info.name, t): (tr.first_frame + 1, tr.last_frame + 1) for r in results[1:]
                     for t, tr in r.tracks.items()}
            extra = mf.decisions_entries(identities, usable, threshold, decisions, writer, spans)
            extra["timings_s"] = {"match": round(match_s, 4)}
        manifest = mf.run_manifest(created, config, device, stages, videos, extra)
        run_dir = writer.finalize(manifest)
    log.info("run written to %s", run_dir)
    return RunResult(run_dir=run_dir, manifest=manifest)


__all__ = ["RunResult", "Stages", "build_stages", "check_models_given", "frame_stride", "resolve_models", "run"]
