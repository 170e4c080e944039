"""The Runner: one run from its typed spec (config.RunConfig: inputs, models, gallery, threshold, outputs).

It owns the models (built once), the run folder, the sinks, the gallery (identities, or a large gallery file's
lookup) and the threshold, and drives one object per input: a FilePass per video file (stages/video_pass.py), then
the decide step (decide/tracks.py, shared with rematch), or a LiveCamera per stream (stages/stream_pass.py, several
in one loop). The run folder is written from the records at the end (runner/folder.py)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from allinone.config import RunConfig
from allinone.decide.calibration import Calibration, find_calibration
from allinone.decide.identities import gallery_identities
from allinone.decide.threshold import Threshold, resolve_threshold, without_threshold
from allinone.decide.tracks import Decided, decide_tracks
from allinone.io.devices import resolve_device
from allinone.io.run_folder import RunWriter, sha256_path
from allinone.records import DecisionEvent, Identity, VideoInfo
from allinone.runner import folder
from allinone.runner.inputs import Input, check_inputs
from allinone.sinks.outputs import build_sinks
from allinone.stages.cameras import CameraHooks
from allinone.stages.build import build_stages, input_models, resolve_models
from allinone.stages.rotation import choose_rotation
from allinone.stages.step import VideoResult

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    manifest: dict
    videos: list[VideoResult] = field(default_factory=list)


@dataclass
class Outcome:
    """What the decide step (files) or the cameras (streams) leave for the run folder."""

    decided: Decided | None = None
    live: dict = field(default_factory=dict)  # stream name → {"outputs", "stats"}
    events: dict[tuple[str, int], DecisionEvent] = field(default_factory=dict)
    match_s: float = 0.0
    search: dict | None = None  # a gallery file's search (run.json "search")


class Runner:
    """Built from the spec (every cheap check made, every input opened, no model loaded); called once to run.
    ``models_ready(stages)``: a caller's check of the loaded models (compare: the LR model's embedding), run before
    any video is processed."""

    def __init__(self, config: RunConfig, models_ready=None, hooks: CameraHooks | None = None,
                 remote=None) -> None:
        """``hooks``: what a caller adds to the live cameras (the watch service: matches shared across cameras,
        each ended track's sighting). ``remote``: stages/ray_cameras.RayCameras, the live cameras' producers on a
        Ray cluster (the streams are then opened there, not here)."""
        self.plan = check_inputs(config, open_streams=remote is None)
        self.config, self.models_ready, self.hooks = config, models_ready, hooks
        self.store = self.stages = self.writer = self.sinks = None
        self.calibrated: Calibration | None = None
        self.gait_sha: str | None = None
        self.remote = remote

    def __call__(self) -> RunResult:
        if self.config.gallery_db is not None and not self.config.track_only:
            from allinone.gallery.run_file import open_store
            self.store = open_store(self.config.gallery_db)
        self.device = resolve_device(self.config.device)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            # output folder and name checked before models load; the sinks connect while the models load (a broker
            # that is away is not fatal: it is retried while the run goes on)
            with RunWriter(self.config.output, self.config.name) as writer, \
                    build_sinks(self.config.outputs) as sinks:
                self.writer, self.sinks = writer, sinks
                self._load_models()
                results = [self._file_pass(i) for i in self.plan.files]
                outcome = self._decide(results)
                manifest = folder.write(self, created, results, outcome)
                run_dir = writer.finalize(manifest)
        finally:
            if self.store is not None:
                self.store.close()
        return RunResult(run_dir=run_dir, manifest=manifest, videos=results)

    def _load_models(self) -> None:
        config = resolve_models(self.config)
        self.stages, self.config = build_stages(config, self.device)
        config, stages = self.config, self.stages
        if stages.embedder is not None:
            self.gait_sha = sha256_path(config.gait.model)
        if self.store is not None:
            from allinone.gallery.run_file import check_store
            check_store(self.store, self.gait_sha, config, stages.embedder, input_models(config))
        if stages.matcher is not None:  # evidence for the FPIR of a given threshold too
            self.calibrated = find_calibration(config.match.calibration, config.gait.model, self.gait_sha,
                                               config.match.metric, getattr(stages.embedder, "embedding", None),
                                               input_models(config))
        if self.models_ready is not None:
            self.models_ready(stages)  # the caller's checks of the loaded models, before any video is processed

    def _file_pass(self, one: Input) -> VideoResult:
        from allinone.stages.video_pass import process_video
        config, stages, src = self.config, self.stages, one.source
        degrees, basis = choose_rotation(src, stages.detector, config.rotate)
        src.set_rotation(degrees)
        info = VideoInfo(path=Path(one.path), name=one.name, role=one.role, frames=src.frame_count_hint,
                         fps=src.fps, width=src.width, height=src.height, rotation=degrees, rotation_basis=basis)
        # the tracked video is drawn in this first pass where it is kept: the gallery's (its G<id> are what
        # --identity names), and a probe's only without decisions (--track-only) or when asked for; a probe's
        # result video, which needs the decisions, shows the same people and ids
        tracked = f"videos/{one.name}.mp4" if config.render and (
            one.role == "gallery" or stages.matcher is None or config.tracked_probe_videos) else None
        result = process_video(src, info, config, stages, self.writer, tracked)
        if tracked:
            result.outputs["annotated_video"] = tracked
        return result

    def gallery(self, results: list[VideoResult], stored: list[Identity] | None,
                fixed: Threshold | None = None) -> tuple[list[Identity], list[Identity], Threshold]:
        """The gallery's identities (from the gallery video, or ``stored`` from a gallery file), the usable ones,
        and the run's threshold (over every embedded track in ``results``; ``fixed`` when a large gallery file's
        search fixed it first)."""
        config = self.config
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
        usable = self.stages.matcher.usable(identities)
        if not usable and fixed is None:  # (a large gallery file streamed: its identities come decision by decision)
            log.warning("%s: the gallery has no usable identity (%s): every probe person will be unknown", where,
                        why)
        every = [e for r in results for e in (r.embeddings[t] for t in sorted(r.embeddings))]
        together = [row for r in results for row in r.together.rows(r.info.name)]
        m = config.match
        threshold = fixed or resolve_threshold(m.threshold, m.metric, every, usable, together,
                                               target_fpir=m.target_fpir, min_overlap=m.auto_min_overlap,
                                               min_frames=m.min_frames, calibration=self.calibrated)
        return identities, usable, threshold

    def _decide(self, results: list[VideoResult]) -> Outcome:
        if self.stages.matcher is None:
            return Outcome()
        stored, search, fixed = None, None, None
        if self.store is not None:  # all identities of a small gallery; a large one's within the threshold and near
            from allinone.gallery.run_file import stored_gallery
            stored, search, fixed = stored_gallery(self.store, results, self.config, self.calibrated)
        if self.plan.streams:
            outcome = self._watch(results, stored, fixed)
        else:
            t0 = time.perf_counter()
            decided = self.decide_files(results, stored, fixed)
            outcome = Outcome(decided, match_s=time.perf_counter() - t0)
            outcome.events = folder.file_events(results, decided.decisions, self.sinks)
        outcome.search = search
        return outcome

    def decide_files(self, results: list[VideoResult], stored: list[Identity] | None,
                     fixed: Threshold | None = None) -> Decided:
        """Identities, the threshold and one Decision per probe track (every probe track, in order)."""
        identities, usable, threshold = self.gallery(results, stored, fixed)
        probe_results = [r for r in results if r.info.role == "probe"]
        probes = [r.embeddings[t] for r in probe_results for t in sorted(r.embeddings)]
        tracks = [(r.info.name, t) for r in probe_results for t in sorted(r.tracks)]
        return Decided(identities, usable, threshold,
                       decide_tracks(self.stages.matcher, probes, tracks, identities, threshold))

    def _cameras(self, identities: list[Identity], threshold: Threshold, lookup, partial: dict):
        """A LiveCamera per stream that answered; a PendingCamera per one that did not (it joins once it does)."""
        from allinone.stages.stream_pass import LiveCamera, PendingCamera
        if self.remote is not None:
            return self._remote_cameras(identities, threshold, lookup, partial)
        several = len(self.plan.streams) > 1

        def make(one: Input, src) -> LiveCamera:
            if self.hooks is not None and self.hooks.prepare is not None:
                self.hooks.prepare(one.name, src)
            info = VideoInfo(path=src.spec, name=one.name, role="probe", frames=0, fps=src.fps, width=src.width,
                             height=src.height)
            # one camera keeps the plain events-NNN.jsonl names; several name their own
            return LiveCamera(src, info, self.config, self.stages, self.writer, identities, threshold,
                              self.plan.gallery_name, partial, lookup, self.sinks,
                              f"events-{one.name}" if several else "events", self.hooks)
        cameras = [make(one, one.source) for one in self.plan.streams if one.source is not None]
        pending = [PendingCamera(str(one.path), self.config.live.reconnect_s,
                                 lambda src, one=one: make(one, src))
                   for one in self.plan.streams if one.source is None]
        return cameras, pending

    def _remote_cameras(self, identities: list[Identity], threshold: Threshold, lookup, partial: dict):
        """``_cameras`` on a Ray cluster: an actor per camera, every one launched before any is waited for (their
        models load at once), each opening its own stream (turned there: ``prepare`` travels with it); a camera
        whose stream does not answer there is retried, as here."""
        from allinone.errors import UserError
        from allinone.stages.ray_cameras import RemoteCamera
        from allinone.stages.stream_pass import PendingCamera
        hooks, remote, lc = self.hooks or CameraHooks(), self.remote, self.config.live
        streams = self.plan.streams
        remote.open(len(streams), self.config.device)
        for one in streams:
            remote.launch(one.name, str(one.path), self.config, lc.reconnect_s, hooks.prepare,
                          hooks.ignore.get(one.name))

        def make(one: Input, opened) -> RemoteCamera:
            src, stride = opened
            info = VideoInfo(path=src.spec, name=one.name, role="probe", frames=0, fps=src.fps, width=src.width,
                             height=src.height)
            return RemoteCamera(src, info, self.config, self.stages, self.writer, identities, threshold,
                                self.plan.gallery_name, partial, lookup, self.sinks,
                                f"events-{one.name}" if len(streams) > 1 else "events", self.hooks, stride=stride)
        cameras, pending = [], []
        for one in streams:
            opener = (lambda one=one: remote.opened(one.name, str(one.path)))
            try:
                cameras.append(make(one, opener()))
            except UserError as exc:
                if not lc.retry_unanswered:
                    raise
                log.warning("%s; retrying while the other cameras run", exc)
                pending.append(PendingCamera(str(one.path), lc.reconnect_s, lambda o, one=one: make(one, o), opener))
        return cameras, pending

    def _watch(self, results: list[VideoResult], stored: list[Identity] | None,
               fixed: Threshold | None) -> Outcome:
        """The streams after the gallery: identities and threshold fixed first (from the gallery alone), then
        decided as they play, every camera in one loop."""
        from allinone.stages.stream_pass import watch_cameras  # the live path loads only for streams
        config, stages = self.config, self.stages
        identities, usable, threshold = self.gallery(results, stored, fixed)
        lookup = None
        if fixed is not None:  # a large gallery file: each decision's identities come from its index
            from allinone.gallery.run_file import Lookup
            lookup = Lookup(self.store, config, threshold.value)
        if self.hooks is not None and self.hooks.on_threshold is not None:
            self.hooks.on_threshold(threshold, config.match.metric)
        partial: dict = {"live": {}}
        try:
            cameras, pending = self._cameras(identities, threshold, lookup, partial)
            self.writer.keep_if_interrupted(partial)  # from here on a failure finalizes the folder as incomplete
            lc = config.live
            done = watch_cameras(cameras, time.monotonic() + lc.duration_s if lc.duration_s else None, pending)
        finally:
            if self.remote is not None:  # the actors stopped (and a Ray started here shut down)
                self.remote.stop()
        outcome = Outcome()
        decisions = []
        for cam in done:
            results.append(cam.result)
            decisions += cam.decisions
            outcome.live[cam.result.info.name] = {"outputs": cam.outputs, "stats": cam.stats}
            outcome.events.update(cam.events)
        for one in self.plan.streams:  # a camera that never answered: said in run.json
            outcome.live.setdefault(one.name, {"stats": {"source": str(one.path), "frames": 0, "answered": False}})
        if threshold.basis == "none":
            decisions = without_threshold(decisions)
        if lookup is not None:
            identities = sorted(lookup.seen.values(), key=lambda i: i.key)
            usable = stages.matcher.usable(identities)
        outcome.decided = Decided(identities, usable, threshold, decisions)
        return outcome


def run(config: RunConfig, models_ready=None) -> RunResult:
    """Process the gallery (video or file) and every probe; write the run folder; return where it is, its manifest
    and the per-video results."""
    return Runner(config, models_ready)()


__all__ = ["Outcome", "RunResult", "Runner", "run"]
