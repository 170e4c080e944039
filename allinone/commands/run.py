"""The main command, run(config): the one loop that calls the stages in order.

Per video, in one streamed pass (stages/video_pass.py): frames → detections → tracks → silhouettes (quality filter,
batched segmentation, OpenGait alignment) → one gait forward per track as it ends. Then gallery identities →
threshold → decisions (decide/) → the result videos (results/render.py) → run.json built from the records
(results/manifest.py). A live stream is decided as it plays (stages/stream_pass.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from allinone.config import RunConfig
from allinone.decide.calibration import find_calibration
from allinone.decide.identities import gallery_identities
from allinone.decide.calibration import Calibration, load_calibration, read_calibration
from allinone.stages.build import input_models
from allinone.decide.threshold import Threshold, check_threshold, resolve_threshold, without_threshold
from allinone.errors import UserError
from allinone.io.devices import resolve_device
from allinone.io.run_folder import RunWriter, check_name_lengths, sha256_path
from allinone.io.video import StreamSource, VideoSource, is_stream, stream_name
from allinone.records import Decision, DecisionEvent, Identity, VideoInfo
from allinone.results import manifest as mf
from allinone.results.render import Skeletons, render_video
from allinone.results.report import write_report
from allinone.sinks.base import Sinks
from allinone.sinks.outputs import build_sinks, check_outputs
from allinone.stages.build import Stages, build_stages, check_models_given, resolve_models
from allinone.stages.rotation import choose_rotation
from allinone.stages.step import VideoResult
from allinone.stages.video_pass import process_video

log = logging.getLogger(__name__)


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


def _output_names(inputs: list[tuple], names: list[str], gallery_name: str, config: RunConfig) -> list[tuple]:
    """(the longest file names a run writes for each input, the input): its tracks file and tracked video, a
    probe's result video; a stream's carry a segment number."""
    out = []
    for (path, role), name in zip(inputs, names):
        seg = "-000" if is_stream(path) else ""
        out += [(f"{name}{seg}.mp4", str(path))]
        if role == "probe" and not config.track_only:
            out.append((f"G-{gallery_name}_P-{name}{seg}.mp4", str(path)))
    return out


def _check_calibration_early(path: Path, checkpoint: str | None) -> None:
    """A calibration file that cannot serve this run is refused before any model loads: missing, not one, damaged,
    or made for another checkpoint file (its metric and embedding are known only once the model is loaded)."""
    rec = read_calibration(path)
    if checkpoint and Path(checkpoint).is_file():  # the same comparison find_calibration makes after the load
        load_calibration(path, sha256_path(checkpoint), rec["metric"])


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


def _gallery_and_threshold(results: list[VideoResult], config: RunConfig, stages: Stages,
                           calibrated: Calibration | None, stored: list[Identity] | None,
                           fixed: Threshold | None = None):
    """The gallery's identities (from the gallery video, or ``stored`` from a gallery file), the usable ones, and
    the run's threshold (over every embedded track in ``results``; ``fixed`` when a large gallery file's search
    fixed it first)."""
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
    if not usable and fixed is None:  # (a large gallery file streamed: its identities come decision by decision)
        log.warning("%s: the gallery has no usable identity (%s): every probe person will be unknown", where, why)
    every = [e for r in results for e in (r.embeddings[t] for t in sorted(r.embeddings))]
    together = [row for r in results for row in r.together.rows(r.info.name)]
    threshold = fixed or resolve_threshold(config.match.threshold, config.match.metric, every, usable, together,
                                  target_fpir=config.match.target_fpir, min_overlap=config.match.auto_min_overlap,
                                  min_frames=config.match.min_frames, calibration=calibrated)
    return identities, usable, threshold


def _decide(results: list[VideoResult], config: RunConfig, stages: Stages, calibrated: Calibration | None,
            stored: list[Identity] | None, fixed: Threshold | None = None):
    """Identities, usable identities, the threshold and one Decision per probe track (every probe track, in
    order)."""
    identities, usable, threshold = _gallery_and_threshold(results, config, stages, calibrated, stored, fixed)
    probe_results = [r for r in results if r.info.role == "probe"]
    probes = [r.embeddings[t] for r in probe_results for t in sorted(r.embeddings)]
    decided = {(d.probe_video, d.probe_track): d for d in stages.matcher(probes, identities, threshold.value)}
    decisions = []
    for r in probe_results:
        for tid in sorted(r.tracks):
            d = decided.get((r.info.name, tid))
            # a track without a single usable silhouette never got an embedding: too short to tell
            decisions.append(d or Decision.too_short(r.info.name, tid))
    if threshold.basis == "none":
        decisions = without_threshold(decisions)
    return identities, usable, threshold, decisions


def _file_events(results: list[VideoResult], decisions: list[Decision], sinks: Sinks) -> dict:
    """Each probe track's final decision as the event every output gets (span 1-based, the silhouettes its
    embedding used), stamped as it is made and sent to the sinks in the decisions' order; by (video, track)."""
    tracks = {(r.info.name, t): tr for r in results if r.info.role == "probe" for t, tr in r.tracks.items()}
    events = {}
    for d in decisions:
        tr = tracks[(d.probe_video, d.probe_track)]
        used = tr.embedding.n_frames if tr.embedding is not None else tr.n_silhouettes
        event = events[(d.probe_video, d.probe_track)] = DecisionEvent.of(
            d, (tr.first_frame + 1, tr.last_frame + 1), used, True)
        sinks.on_event(event)
    return events


def _live(src, name: str, results: list[VideoResult], config: RunConfig, stages: Stages, writer: RunWriter,
          calibrated: Calibration | None, stored: list[Identity] | None, gallery_name: str,
          fixed: Threshold | None = None, store=None, sinks: Sinks | None = None):
    """The stream after the gallery: identities and threshold fixed first (from the gallery alone), then decided as
    it plays. Returns the run's (identities, usable, threshold, decisions), the stream's outputs and stats, and the
    final decisions' events."""
    from allinone.stages.stream_pass import run_stream  # the live path loads only for streams
    identities, usable, threshold = _gallery_and_threshold(results, config, stages, calibrated, stored, fixed)
    lookup = None
    if fixed is not None:  # a large gallery file: each decision's identities come from its index
        from allinone.gallery.run_file import Lookup
        lookup = Lookup(store, config, threshold.value)
    info = VideoInfo(path=src.spec, name=name, role="probe", frames=0, fps=src.fps, width=src.width,
                     height=src.height)
    result, decisions, stats, outputs, events = run_stream(src, info, config, stages, writer, identities,
                                                           threshold, gallery_name, lookup, sinks)
    results.append(result)
    if threshold.basis == "none":
        decisions = without_threshold(decisions)
    if lookup is not None:
        identities = sorted(lookup.seen.values(), key=lambda i: i.key)
        usable = stages.matcher.usable(identities)
    return (identities, usable, threshold, decisions), {name: {"outputs": outputs, "stats": stats}}, events


def run(config: RunConfig, models_ready=None) -> RunResult:
    """Process the gallery (video or file) and every probe video; write the run folder; return where it is, its
    manifest and the per-video results. ``models_ready(stages)``: a caller's check of the loaded models (compare:
    the LR model's embedding), run before any video is processed."""
    if (config.gallery is None) == (config.gallery_db is None):
        raise UserError("give a gallery video or a gallery file (--gallery or --gallery-db), one of them")
    inputs = ([(config.gallery, "gallery")] if config.gallery is not None else []) + \
        [(p, "probe") for p in config.probes]
    streams = [p for p, _ in inputs if is_stream(p)]
    if streams and (len(config.probes) != 1 or not is_stream(config.probes[0])):
        raise UserError("a live stream is the one --probe of a run (with a gallery video or --gallery-db)")
    if streams and config.track_only:
        raise UserError("--track-only is for video files, not live streams")
    if streams and config.gait.model:
        from allinone.gait.backends import reads_keypoints, reads_silhouettes
        if reads_keypoints(config.gait.model) and reads_silhouettes(config.gait.model):
            raise UserError("a SkeletonGait++ checkpoint runs on video files only, not yet on live streams",
                            config.gait.model)
    names = _unique_names([Path(stream_name(str(p))) if is_stream(p) else Path(p) for p, _ in inputs])
    gallery_name = names[0] if config.gallery is not None else Path(config.gallery_db).stem
    check_name_lengths(config.output, _output_names(inputs, names, gallery_name, config))
    # every input checked (a stream opened) before any model is loaded
    sources = [StreamSource(str(p), config.live.reconnect_s) if is_stream(p) else VideoSource(p) for p, _ in inputs]
    _warn_repeated_inputs([Path(p) for p, _ in inputs if not is_stream(p)])
    if config.match.threshold is not None and config.match.metric != "auto":
        check_threshold(config.match.threshold, config.match.metric)
    if config.match.calibration and not config.track_only:  # its form and checkpoint, before any model loads
        _check_calibration_early(Path(config.match.calibration), config.gait.model)
    check_models_given(config)
    check_outputs(config.outputs)
    store = None
    if config.gallery_db is not None and not config.track_only:
        from allinone.gallery.run_file import open_store
        store = open_store(config.gallery_db)
    device = resolve_device(config.device)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        # output folder and name checked before models load; the sinks connect while the models load (a broker that
        # is away is not fatal: it is retried while the run goes on)
        with RunWriter(config.output, config.name) as writer, build_sinks(config.outputs) as sinks:
            config = resolve_models(config)
            stages, config = build_stages(config, device)
            calibrated, gait_sha, stored_pictures, search_info = None, None, {}, None
            if stages.embedder is not None:
                gait_sha = sha256_path(config.gait.model)
            if store is not None:
                from allinone.gallery.run_file import check_store
                check_store(store, gait_sha, config, stages.embedder, input_models(config))
            if stages.matcher is not None:  # evidence for the FPIR of a given threshold too
                calibrated = find_calibration(config.match.calibration, config.gait.model, gait_sha,
                                              config.match.metric, getattr(stages.embedder, "embedding", None),
                                              input_models(config))
            if models_ready is not None:
                models_ready(stages)  # the caller's checks of the loaded models, before any video is processed
            results: list[VideoResult] = []
            for src, (path, role), name in zip(sources, inputs, names):
                if is_stream(path):
                    continue
                degrees, basis = choose_rotation(src, stages.detector, config.rotate)
                src.set_rotation(degrees)
                info = VideoInfo(path=Path(path), name=name, role=role, frames=src.frame_count_hint,
                                 fps=src.fps, width=src.width, height=src.height, rotation=degrees,
                                 rotation_basis=basis)
                # the tracked video is drawn in this first pass where it is kept: the gallery's (its G<id> are
                # what --identity names), and a probe's only without decisions (--track-only) or when asked for;
                # a probe's result video, which needs the decisions, shows the same people and ids
                tracked = f"videos/{name}.mp4" if config.render and (
                    role == "gallery" or stages.matcher is None or config.tracked_probe_videos) else None
                results.append(process_video(src, info, config, stages, writer, tracked))
                if tracked:
                    results[-1].outputs["annotated_video"] = tracked

            decision, live, stored, fixed, events = None, {}, None, None, {}
            if store is not None:  # all identities of a small gallery; a large one's within the threshold and near
                from allinone.gallery.run_file import stored_gallery
                stored, search_info, fixed = stored_gallery(store, results, config, calibrated)
            if streams:
                decision, live, events = _live(sources[-1], names[-1], results, config, stages, writer, calibrated,
                                               stored, gallery_name, fixed, store, sinks)
                match_s = 0.0
            elif stages.matcher is not None:
                t0 = time.perf_counter()
                decision = _decide(results, config, stages, calibrated, stored, fixed)
                match_s = time.perf_counter() - t0
                events = _file_events(results, decision[3], sinks)

            outputs: dict[str, dict[str, str]] = {}
            for r in results:
                if r.info.name in live:
                    outputs[r.info.name] = live[r.info.name]["outputs"]
                    continue
                identities, decisions = (decision[0], decision[3]) if decision else (None, None)
                poses = {t: tr.keypoints for t, tr in r.tracks.items() if tr.keypoints is not None}
                outputs[r.info.name] = {**r.outputs, **render_video(
                    r.info, writer.dir / f"tracks/{r.info.name}.txt", writer, gallery_name, identities, decisions,
                    config.quiet, r.timings, annotated=False, skeletons=Skeletons(poses) if poses else None)
                } if config.render else {}
            videos = [mf.video_entry(r.info, r.tracks, outputs[r.info.name], r.timings,
                                     r.info.fps / r.silhouette_stride if stages.segmenter else None)
                      for r in results]
            for entry, src in zip(videos, (s for s, (p, _) in zip(sources, inputs) if not is_stream(p))):
                if src.decode_warning:  # a damaged or truncated file: the run says where decoding stopped
                    entry["decode_warning"] = src.decode_warning
            extra: dict = {"gallery_db": str(config.gallery_db), "search": search_info} \
                if config.gallery_db is not None else {}
            if live:
                extra["live"] = {name: x["stats"] for name, x in live.items()}
            if decision is not None and store is not None:  # the gallery the run used, kept: rematch needs no file
                from allinone.gallery.run_file import FEATURES, save_features
                save_features(writer.path(FEATURES), decision[0])
                extra["gallery_features"] = FEATURES
                stored_pictures = store.pictures([m.track_id for i in decision[0] for m in i.members[:1]])
            if decision is not None:
                identities, usable, threshold, decisions = decision
                spans = {(r.info.name, t): (tr.first_frame + 1, tr.last_frame + 1) for r in results
                         if r.info.role == "probe" for t, tr in r.tracks.items()}
                # the gallery's pictures only: a probe video's name may be the one a gallery file's tracks carry
                pictures = {(r.info.name, t): {k: tr.files[k] for k in ("crop", "gei") if k in tr.files}
                            for r in results if r.info.role == "gallery" for t, tr in r.tracks.items()}
                for tid, blobs in stored_pictures.items():
                    for key, blob in zip(("crop", "gei"), blobs):
                        if blob:
                            rel = f"{mf.GALLERY_DB_PICTURES}/{tid:03d}_{key}.png"
                            writer.path(rel).write_bytes(blob)
                            pictures.setdefault(("gallery", tid), {})[key] = rel
                extra.update(mf.decisions_entries(identities, usable, threshold, decisions, writer, spans,
                                                  pictures, events))
                if not live:  # (a stream's decisions are many small ones, as it plays)
                    extra["assignment"] = mf.assignment_entry(config.match.solve_seconds, stages.matcher.solved)
                    extra.update(mf.write_distances(writer, stages.matcher.names, stages.matcher.distances))
                extra["timings_s"] = {"match": round(match_s, 4)}
            if sinks:  # delivered, dropped (queue full or unsent at the end) and failed events per sink
                extra["sinks"] = sinks.close()
            manifest = mf.run_manifest(created, config, device, stages, videos, extra, gait_sha)
            if decision is not None:
                manifest["report"] = write_report(writer.dir, manifest)
            run_dir = writer.finalize(manifest)
    finally:
        if store is not None:
            store.close()
    return RunResult(run_dir=run_dir, manifest=manifest, videos=results)


__all__ = ["RunResult", "run"]
