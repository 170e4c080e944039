"""run(config): the one loop that calls the stages in order.

Per video, in one streamed pass: frames → detections → tracks → square crops → masks (batched) → aligned
silhouettes. Only boxes, masks written as PNG and 64×64 silhouettes are kept, never frames, so memory follows the
tracks, not the video's length. Then: one gait forward per track → matching → a second decode per video to draw
the result videos from the stored tracks (decoding costs ~2 ms a frame; keeping 720p frames would cost 2.7 MB each).
"""
from __future__ import annotations

import logging
import pickle
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import __version__
from .config import RunConfig
from .errors import UserError
from .output import RunWriter, sha256_path
from .records import Decision, Detections, Embedding, Silhouettes, Track, VideoInfo
from .render import UNKNOWN_COLOR, Box, draw, identity_color
from .runtime import resolve_device
from .video import VideoSink, VideoSource

log = logging.getLogger(__name__)


@dataclass
class Stages:
    """The models of a run, built once."""

    detector: object
    segmenter: object | None = None
    embedder: object | None = None
    matcher: object | None = None


@dataclass
class VideoResult:
    info: VideoInfo
    tracks: dict[int, Track]
    silhouettes: dict[int, Silhouettes] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    entry: dict = field(default_factory=dict)  # its run.json "videos" entry


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


def _build_detector(model: str, config: RunConfig, device: str):
    from .detect import build_detector
    return build_detector(model, config.detect, device)


def _build_segmenter(model: str, device: str):
    from .segment import build_segmenter
    return build_segmenter(model, device)


def _load_gait(model: str, config: RunConfig, device: str):
    """The gait backend for the model file: torch for OpenGait .pt checkpoints, ONNX Runtime for .onnx."""
    from .gait_onnx import embedder_for
    return embedder_for(model, config.gait, device)


def build_stages(config: RunConfig, device: str) -> tuple[Stages, RunConfig]:
    """The stages, built once, and the config with what loading them settled (the 'auto' metric)."""
    detector = _build_detector(config.detect.model, config, device)
    if config.track_only:
        return Stages(detector), config
    from .match import Matcher
    segmenter = _build_segmenter(config.segment.model, device)
    embedder = _load_gait(config.gait.model, config, device)
    if config.match.metric == "auto":
        config = replace(config, match=replace(config.match, metric=embedder.metric))
    elif config.match.metric != embedder.metric:
        log.warning("matching with %s distances; %s (%s) is evaluated with %s in OpenGait", config.match.metric,
                    getattr(embedder, "arch", "the gait model"), config.gait.model, embedder.metric)
    return Stages(detector, segmenter, embedder, Matcher(config.match)), config


class _SilhouetteCutter:
    """Collects square crops of tracked people, segments them in batches, writes the raw masks as PNG and keeps
    OpenGait's aligned silhouettes."""

    def __init__(self, config: RunConfig, segmenter, writer: RunWriter, video: str, result: VideoResult) -> None:
        from .segment.crop import crop_batch, probs_to_masks
        from .align import align_silhouette
        self._crop_batch, self._to_masks, self._align = crop_batch, probs_to_masks, align_silhouette
        self.cfg = config.segment
        self.segmenter = segmenter
        self.writer = writer
        self.video = video
        self.result = result
        self.pending_crops: list[np.ndarray] = []
        self.pending_keys: list[tuple[int, int]] = []  # (track id, frame index)
        self.aligned: dict[int, list[np.ndarray]] = defaultdict(list)
        self.aligned_frames: dict[int, list[int]] = defaultdict(list)

    def add(self, frame: np.ndarray, index: int, tracked: Detections) -> None:
        step = self.cfg.frame_step
        keep = [k for k, tid in enumerate(tracked.track_id)
                if (index - self.result.tracks[int(tid)].first_frame) % step == 0]
        if not keep:
            return
        t0 = time.perf_counter()
        crops = self._crop_batch(frame, tracked.xyxy[keep], self.cfg.box_pad, self.segmenter.input_size,
                                 self.cfg.canvas_value)
        self.result.timings["crop"] += time.perf_counter() - t0
        self.pending_crops.extend(crops)
        self.pending_keys.extend((int(tracked.track_id[k]), index) for k in keep)
        if len(self.pending_crops) >= self.cfg.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending_crops:
            return
        t0 = time.perf_counter()
        probs = self.segmenter(np.stack(self.pending_crops))
        masks = self._to_masks(probs, self.cfg.threshold)
        t1 = time.perf_counter()
        for (tid, index), mask in zip(self.pending_keys, masks):
            png = self.writer.path(f"silhouettes/{self.video}/{tid:03d}/{index + 1:06d}.png")
            cv2.imwrite(str(png), mask)
        t2 = time.perf_counter()
        for (tid, index), mask in zip(self.pending_keys, masks):
            sil = self._align(mask)
            if sil is not None:
                self.aligned[tid].append(sil)
                self.aligned_frames[tid].append(index)
        t3 = time.perf_counter()
        self.result.timings["segment"] += t1 - t0
        self.result.timings["write"] += t2 - t1
        self.result.timings["align"] += t3 - t2
        self.pending_crops.clear()
        self.pending_keys.clear()

    def silhouettes(self) -> dict[int, Silhouettes]:
        self.flush()
        return {tid: Silhouettes(tid, np.stack(sils), np.asarray(self.aligned_frames[tid]))
                for tid, sils in self.aligned.items()}


def _process_video(src: VideoSource, info: VideoInfo, config: RunConfig, stages: Stages,
                   writer: RunWriter) -> VideoResult:
    """One streamed pass over a video: detect, track, and (when a segmenter is given) cut silhouettes."""
    from .track import ByteTracker
    tracker = ByteTracker(config.track, src.fps)
    result = VideoResult(info=info, tracks={})
    tm = result.timings
    cutter = (_SilhouetteCutter(config, stages.segmenter, writer, info.name, result)
              if stages.segmenter is not None else None)
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
        if cutter is not None and len(tracked):
            cutter.add(frame, index, tracked)
        bar.update(1)
    if cutter is not None:
        result.silhouettes = cutter.silhouettes()
    bar.close()
    tm["total"] = time.perf_counter() - start
    if src.count == 0:
        raise UserError("video has no frames that can be decoded", src.path)
    short = [tid for tid, t in result.tracks.items() if t.n_frames < config.track.min_track_frames]
    for tid in short:
        del result.tracks[tid]
        result.silhouettes.pop(tid, None)
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


def _embed(results: list[VideoResult], stages: Stages, writer: RunWriter, quiet: bool = True) -> list[Embedding]:
    """One gait forward per track with silhouettes; features saved as .npy, aligned sequences as OpenGait pickles."""
    items: list[tuple[VideoResult, int, np.ndarray]] = []
    for r in results:
        for tid in sorted(r.tracks):
            sils = r.silhouettes.get(tid)
            if sils is not None and len(sils):
                seq = sils.aligned
                with open(writer.path(f"silhouettes/{r.info.name}/{tid:03d}.pkl"), "wb") as fh:
                    pickle.dump(seq, fh)
                items.append((r, tid, seq))
    if not items or stages.embedder is None:
        return []
    out = []
    for r, tid, seq in tqdm(items, desc="gait", unit="track", disable=quiet, leave=False, dynamic_ncols=True):
        t0 = time.perf_counter()
        feat = np.asarray(stages.embedder([seq])[0], dtype=np.float32)  # one forward per track
        r.timings["embed"] += time.perf_counter() - t0  # charged to the track's own video
        writer.write_npy(f"features/{r.info.name}/{tid:03d}.npy", feat)
        out.append(Embedding(video=r.info.name, track_id=tid, feature=feat, n_frames=len(seq)))
    return out


def _render(result: VideoResult, config: RunConfig, writer: RunWriter, gallery_name: str | None,
            decisions: dict[int, Decision] | None) -> dict[str, str]:
    """Second decode of the video: draw the stored tracks. Always the tracked video; for a probe with decisions,
    also the result video where each person takes the color and label of the gallery identity they matched."""
    info = result.info
    by_frame: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for tid, t in result.tracks.items():
        for f, box in zip(t.frames, t.xyxy):
            by_frame[f].append((tid, box))
    prefix = "G" if info.role == "gallery" else "P"
    outputs = {"annotated_video": f"videos/{info.name}.mp4"}
    sinks = [VideoSink(writer.path(outputs["annotated_video"]), info.fps, (info.width, info.height))]
    if decisions is not None and gallery_name is not None:
        outputs["result_video"] = f"G-{gallery_name}_P-{info.name}.mp4"
        sinks.append(VideoSink(writer.path(outputs["result_video"]), info.fps, (info.width, info.height)))

    def result_box(tid: int, box: np.ndarray) -> Box:
        d = decisions.get(tid) if decisions else None
        if d is None or d.status == "too_short":
            return Box(box, UNKNOWN_COLOR, f"{prefix}{tid} too short")
        if d.status == "match":
            return Box(box, identity_color(d.gallery_track), f"G{d.gallery_track} {d.distance:.2f}")
        return Box(box, UNKNOWN_COLOR, f"unknown {d.distance:.2f}" if d.distance is not None else "unknown")

    t0 = time.perf_counter()
    src = VideoSource(info.path)
    try:
        for index, frame in enumerate(tqdm(src.frames(), total=info.frames, desc=f"render {info.name}",
                                           unit="frame", disable=config.quiet, leave=False, dynamic_ncols=True)):
            people = by_frame.get(index, [])
            if len(sinks) > 1:
                sinks[1].write(draw(frame.copy(), [result_box(tid, b) for tid, b in people]))
            sinks[0].write(draw(frame, [Box(b, identity_color(tid), f"{prefix}{tid}") for tid, b in people]))
    except BaseException:
        for s in sinks:
            s.discard()
        raise
    for s in sinks:
        s.close()
    result.timings["render"] += time.perf_counter() - t0
    return outputs


def _weights_entry(path: str | None) -> dict:
    if not path:
        return {"path": None, "sha256": None}
    p = Path(path)
    return {"path": str(p), "sha256": sha256_path(p) if p.exists() else None}


def run(config: RunConfig) -> RunResult:
    """Process the gallery and every probe video; write the run folder; return where it is and its manifest."""
    inputs = [(config.gallery, "gallery")] + [(p, "probe") for p in config.probes]
    names = _unique_names([Path(p) for p, _ in inputs])
    sources = [VideoSource(p) for p, _ in inputs]  # every input checked before any model is loaded
    device = resolve_device(config.device)
    config = resolve_models(config)
    stages, config = build_stages(config, device)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with RunWriter(config.output, config.name) as writer:
        results: list[VideoResult] = []
        for src, (path, role), name in zip(sources, inputs, names):
            info = VideoInfo(path=Path(path), name=name, role=role, frames=src.frame_count_hint,
                             fps=src.fps, width=src.width, height=src.height)
            r = _process_video(src, info, config, stages, writer)
            tracks_file = writer.write_mot(f"tracks/{name}.txt", [r.tracks[t] for t in sorted(r.tracks)])
            r.entry = {"name": name, "role": role, "path": str(path), "frames": r.info.frames,
                       "fps": r.info.fps, "width": r.info.width, "height": r.info.height,
                       "tracks_file": tracks_file}
            results.append(r)

        embeddings = _embed(results, stages, writer, config.quiet)
        decisions: list[Decision] = []
        if stages.matcher is not None:
            emb_by = {(e.video, e.track_id): e for e in embeddings}
            gallery = [e for e in embeddings if e.video == names[0]]
            probes = [e for e in embeddings if e.video != names[0]]
            t0 = time.perf_counter()
            decisions = list(stages.matcher(probes, gallery))
            # probe tracks without a single usable silhouette never got an embedding: too short to tell
            for r in results[1:]:
                for tid in sorted(r.tracks):
                    if (r.info.name, tid) not in emb_by:
                        decisions.append(Decision(r.info.name, tid, None, None, None, "too_short", []))
            match_s = time.perf_counter() - t0
            order = {n: i for i, n in enumerate(names)}
            decisions.sort(key=lambda d: (order[d.probe_video], d.probe_track))
        else:
            match_s = 0.0

        dec_by_video: dict[str, dict[int, Decision]] = defaultdict(dict)
        for d in decisions:
            dec_by_video[d.probe_video][d.probe_track] = d
        videos_json = []
        for r in results:
            is_probe = r.info.role == "probe"
            outs = _render(r, config, writer, names[0],
                           dec_by_video.get(r.info.name, {}) if (is_probe and stages.matcher) else None)
            r.entry.update(outs)
            r.entry["tracks"] = [_track_entry(r, tid, writer) for tid in sorted(r.tracks)]
            tm = r.timings
            r.entry["timings_s"] = {k: round(v, 4) for k, v in tm.items()}
            first_pass = tm.get("total", 0.0) + tm.get("embed", 0.0)
            r.entry["end_to_end_fps"] = round(r.info.frames / first_pass, 2) if first_pass > 0 else None
            videos_json.append(r.entry)

        manifest = {
            "version": 1,
            "created": created,
            "allinone_version": __version__,
            "settings": config.to_json(),
            "device": device,
            "platform": {"python": platform.python_version(), "machine": platform.machine()},
            "weights": {
                "detector": _weights_entry(getattr(stages.detector, "path", None)),
                **({"segmenter": _weights_entry(config.segment.model)} if stages.segmenter else {}),
                **({"gait": {**_weights_entry(config.gait.model), "arch": stages.embedder.arch,
                             "metric": stages.embedder.metric}} if stages.embedder else {}),
            },
            "videos": videos_json,
        }
        if stages.matcher is not None:
            manifest["matches"] = [_decision_json(d) for d in decisions]
            manifest["matches_file"] = writer.write_csv(
                "matches.csv",
                ["probe_video", "probe_track", "gallery_video", "gallery_track", "distance", "status", "ranking"],
                [[d.probe_video, d.probe_track, d.gallery_video or "", "" if d.gallery_track is None else
                  d.gallery_track, "" if d.distance is None else f"{d.distance:.6f}", d.status,
                  ";".join(f"{g}:{dist:.6f}" for _, g, dist in d.ranking)] for d in decisions])
            manifest["timings_s"] = {"match": round(match_s, 4)}
        run_dir = writer.finalize(manifest)
    log.info("run written to %s", run_dir)
    return RunResult(run_dir=run_dir, manifest=manifest)


def _track_entry(r: VideoResult, tid: int, writer: RunWriter) -> dict:
    t = r.tracks[tid]
    entry = {"id": tid, "first_frame": t.first_frame + 1, "last_frame": t.last_frame + 1, "n_frames": t.n_frames}
    name = r.info.name
    png_dir = f"silhouettes/{name}/{tid:03d}"
    if (writer.dir / png_dir).is_dir():
        entry["silhouettes_png_dir"] = png_dir
        entry["n_silhouettes"] = len(r.silhouettes[tid]) if tid in r.silhouettes else 0
    pkl = f"silhouettes/{name}/{tid:03d}.pkl"
    if (writer.dir / pkl).is_file():
        entry["silhouettes_pkl"] = pkl
    feat = f"features/{name}/{tid:03d}.npy"
    if (writer.dir / feat).is_file():
        entry["feature"] = feat
    return entry


def _decision_json(d: Decision) -> dict:
    return {"probe_video": d.probe_video, "probe_track": d.probe_track, "gallery_video": d.gallery_video,
            "gallery_track": d.gallery_track,
            "distance": None if d.distance is None else round(float(d.distance), 6),
            "status": d.status, "ranking": [[g, round(float(dist), 6)] for _, g, dist in d.ranking]}
