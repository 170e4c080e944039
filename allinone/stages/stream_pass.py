"""The live path: a camera (RTSP, HTTP, webcam) decided while it plays; several cameras in one loop.

Per frame, as it arrives: detect → track → silhouettes (segmented at once, no batching across frames) → for each
track that has gained `step` silhouettes since its last decision (and has at least `window_min`), one gait forward
on its latest `window` silhouettes, then the decision rule over the open tracks at their current spans
(stages/live_decisions.py; also whenever spans that grew make two tracks in view hold one identity) → every
changed decision is appended to the events file → the frame is drawn with the current decisions and written to the
result video. Tracks that end are saved (their last window's pickle, and as feature the embedding of their last
decision), closed with a final decision (an event with "final": true) and let go, so memory stays flat.
The frame's work is two halves with a small hand-off between them (stages/live_handoff.py CameraStep): the producer,
where the models are (stages/live_producer.py: detect … embed, ended tracks taken), and LiveCamera, the consumer
(decisions, events, drawing, segments, track files, hooks). Both run here with the local engine; ``watch --engine
ray`` runs each camera's producer in a Ray actor on a cluster node (stages/ray_cameras.py).

Events, MOT rows and the result video are written in segments (io/segments.py, LiveConfig.segment_s). The run
ends when the stream ends (after reconnecting failed), after --duration, or on Ctrl-C; the run folder is then
completed as for files, with the final decisions in run.json. Any failure from the stream's start on (a second
Ctrl-C while finishing included) leaves the folder with everything written so far and run.json
``status: "incomplete"`` (RunWriter.keep_if_interrupted).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from allinone.config import RunConfig
from allinone.records import Decision, DecisionEvent, Embedding, Identity, VideoInfo
from allinone.decide.threshold import Threshold
from allinone.io.segments import MotProxy, Segments
from allinone.results.render import UNKNOWN_COLOR, Box, decision_box, draw, draw_poses
from allinone.stages.cameras import CameraHooks
from allinone.stages.live_decisions import LiveDecisions
from allinone.stages.live_handoff import CameraEnd, CameraStep, EndedTrack
from allinone.stages.live_producer import CameraProducer
from allinone.stages.step import TrackCloser, VideoResult

log = logging.getLogger(__name__)

RANKING_KEPT = 10  # a closed track's ranking in run.json: its nearest identities (a day of tracks × a big gallery)


class LatencyHistogram:
    """Streaming latency quantiles in constant memory: counts in log-spaced bins, 100 per decade from 1 ms to
    1000 s (values outside go to the end bins). A quantile is reported as its bin's geometric centre, so it is within
    a factor 10**(1/200) (about 1.2 %) of the exact sample quantile (the order statistic that numpy's
``quantile(method="lower")`` takes) for values in range; n, mean and max are exact."""

    LO, DECADES, PER_DECADE = 1e-3, 6, 100

    def __init__(self) -> None:
        self.counts = np.zeros(self.DECADES * self.PER_DECADE, np.int64)
        self.n, self.total, self.max = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        b = int(np.floor(np.log10(max(x, self.LO) / self.LO) * self.PER_DECADE))
        self.counts[min(max(b, 0), len(self.counts) - 1)] += 1
        self.n, self.total, self.max = self.n + 1, self.total + x, max(self.max, x)

    def quantile(self, q: float) -> float:
        rank = q * (self.n - 1)  # the order statistic numpy's quantile(method="lower") takes
        b = int(np.searchsorted(np.cumsum(self.counts), int(np.floor(rank)) + 1))
        return min(self.LO * 10 ** ((b + 0.5) / self.PER_DECADE), self.max)

    def summary(self) -> dict:
        if not self.n:
            return {"n": 0}
        return {"n": self.n, "median": round(self.quantile(0.5), 4), "p95": round(self.quantile(0.95), 4),
                "max": round(self.max, 4), "mean": round(self.total / self.n, 4), "error": "±1.2% (histogram)"}


@dataclass
class CameraResult:
    """What a camera's pass leaves: its tracks, final decisions (every track, in order), live stats, the files it
    wrote (run-relative) and the final decisions' events by (stream, track)."""

    result: VideoResult
    decisions: list[Decision]
    stats: dict
    outputs: dict
    events: dict[tuple[str, int], DecisionEvent] = field(default_factory=dict)


class LiveCamera:
    """One live camera: frames in as they arrive (``step``), each changed decision out as an event (to its events
    file and ``sinks``), the result video drawn as it plays; ``close`` closes the open tracks with their final
    decisions and the segments. ``partial``: the run's journal, where the camera keeps its segments as they are
    written (a killed run is recovered from it). ``lookup``: for a large gallery file, embeddings → the identities
    to compare them with (its index), asked at each decision in place of ``identities``.

    It is the consumer of a CameraProducer's hand-offs (``consume``): with ``producer`` None it builds its own and
    ``step`` runs both halves in this process; a remote camera (stages/ray_cameras.py) gives ``stride``, the
    producer's silhouette stride, and feeds it CameraSteps made on another machine."""

    def __init__(self, src, info: VideoInfo, config: RunConfig, stages, writer, identities: list[Identity],
                 threshold: Threshold, gallery_name: str, partial: dict, lookup=None, sinks=None,
                 events_stem: str = "events", hooks: CameraHooks | None = None, stride: int | None = None) -> None:
        lc = self.lc = config.live
        self.hooks = hooks or CameraHooks()
        self.hooks.cameras.append(self)
        self.gallery_version = 0
        self.walls: dict[int, list[float]] = {}  # each open track's first and last wall time (unix seconds)
        self.src, self.info, self.stages, self.sinks = src, info, stages, sinks
        self.result = VideoResult(info=info)
        self.tm = self.result.timings
        self.producer = None
        if stride is None:
            self.producer = CameraProducer(src.fps, (src.height, src.width), info.name, config, stages, self.tm,
                                           self.hooks.ignore.get(info.name))
            stride = self.producer.stride
        self.result.silhouette_stride = stride
        self.poses = stages.segmenter is None and stages.pose is not None  # a keypoint gait model (GaitGraph)
        self.segments = Segments(writer, info.name, f"G-{gallery_name}_P-{info.name}", src.fps,
                                 (src.width, src.height), lc.segment_s, keyframe_s=lc.keyframe_s,
                                 events_stem=events_stem)
        self.partial = partial
        partial.setdefault("live", {})[info.name] = {"source": src.spec, "segments": self.segments.entries}
        self.mot = MotProxy(self.segments)
        self.closer = TrackCloser(config, stages, writer, self.result)
        self.spans: dict[int, tuple[int, int, int]] = {}  # the open tracks at the last frame
        cross = self.hooks.cross
        # another camera's matches at the same moment block their identities here (cameras that cannot both see
        # one person then)
        blocked = None if cross is None else (lambda tid: cross.blocked(info.name, *self.walls[tid]))
        self.book = LiveDecisions(stages.matcher, identities, threshold.value, info.name, lookup, blocked)
        self.finals: dict[int, Decision] = {}
        self.final_events: dict[tuple[str, int], DecisionEvent] = {}
        self.let_go = 0  # ended tracks whose rows left memory (LiveConfig.tracks_kept)
        self.latencies = LatencyHistogram()
        self.n_events = 0
        self.index = -1
        self.arrived = self.start = time.monotonic()

    def _emit(self, d: Decision, arrived: float, n_sil: int | None, final: bool = False) -> None:
        now = time.monotonic()
        self.latencies.add(now - arrived)
        span = self.spans.get(d.probe_track)
        tr = self.result.tracks.get(d.probe_track)  # a closing track's span left `spans` with it
        span = (span[0] + 1, span[1] + 1) if span is not None else (tr.first_frame + 1, tr.last_frame + 1)
        event = DecisionEvent.of(d, span, n_sil, final)
        # the events file's row: the event, and when in the stream and how late it was decided
        self.segments.write_event(json.dumps({**event.to_json(), "frame": self.index + 1,
                                              "latency_s": round(now - arrived, 4)}, allow_nan=False))
        if self.sinks:
            self.sinks.on_event(event)
        if final:
            self.final_events[(event.stream, event.track)] = event
        self.n_events += 1

    def _close_tracks(self, ended: tuple[EndedTrack, ...], arrived: float) -> None:
        """Close ended tracks: saved, then their final decision (the rule with them at their full span)."""
        closing = {}
        for e in ended:
            tid = e.track_id
            self.spans.pop(tid, None)
            if self.poses:
                self.closer(tid, list(e.span), None, e.crop, None, e.feature, e.cut)
            else:
                self.closer(tid, list(e.span), e.cut, e.crop, None, e.feature)
            tr = self.result.tracks[tid]
            last = self.book.latest.get(tid)  # its last decision's embedding (the producer's feature)
            if last is not None:  # that embedding, with the track's full span, decides it for good
                tr.embedding = Embedding(last.video, tid, last.feature, last.n_frames, tr.first_frame, tr.last_frame)
            closing[tid] = tr.embedding
        lengths = {t: (e.n_frames if e is not None else None) for t, e in closing.items()}
        out, done = self.book.close(closing, {t: (s[0], s[1]) for t, s in self.spans.items()})
        for d in out:
            n = lengths[d.probe_track] if d.probe_track in closing else self.book.latest[d.probe_track].n_frames
            self._emit(d, arrived, n, d.probe_track in closing)
        self._closed_hooks(done)
        # kept until the run's end, so kept small: the nearest RANKING_KEPT identities, not the whole gallery's
        self.finals.update({t: replace(d, ranking=d.ranking[:RANKING_KEPT]) for t, d in done.items()})
        for tid in closing:
            tr = self.result.tracks[tid]
            tr.embedding = None  # saved as features/…npy and decided for good
            tr.crop = tr.gei = None  # written to pictures/ already: memory stays flat
        self._let_go_oldest()

    def _let_go_oldest(self) -> None:
        """Beyond ``tracks_kept`` ended tracks, the oldest rows leave memory (rows are added as tracks end, so the
        first are the oldest); their final events are in the events files already."""
        tracks, name = self.result.tracks, self.info.name
        while len(tracks) > self.lc.tracks_kept:
            tid = next(iter(tracks))
            del tracks[tid]
            self.finals.pop(tid, None)
            self.final_events.pop((name, tid), None)
            self.let_go += 1

    def _closed_hooks(self, done: dict[int, Decision]) -> None:
        """Closed tracks with their final decisions: to the other cameras (a match blocks its identity there for
        its wall span) and to ``on_final`` (the watch service's sightings), then their wall times let go."""
        hooks, name = self.hooks, self.info.name
        for tid, d in done.items():
            walls = tuple(self.walls.pop(tid, (time.time(), time.time())))
            if hooks.cross is not None:
                hooks.cross.close(name, tid, d.identity if d.status == "match" else None, *walls)
            if hooks.on_final is not None:
                hooks.on_final(name, self.result.tracks[tid], d, self.final_events.get((name, tid)), walls)
        self._share()

    def _share(self) -> None:
        """This camera's open tracks and their current matches, for the other cameras."""
        if self.hooks.cross is None:
            return
        current = self.book.current
        self.hooks.cross.update(self.info.name, {
            tid: (current[tid].identity if tid in current and current[tid].status == "match" else None, w[0])
            for tid, w in self.walls.items()})

    def _draw(self, frame: np.ndarray, tracked, poses: dict) -> None:
        people = [(int(t), b) for t, b in zip(tracked.track_id, tracked.xyxy)]
        current, colors = self.book.current, self.book.colors
        if self.poses:
            draw_poses(frame, poses, {t: decision_box(b, t, current[t], colors).color
                                      if t in current else UNKNOWN_COLOR for t, b in people})
        drawn = draw(frame, [decision_box(b, t, current[t], colors) if t in current
                             else Box(b, UNKNOWN_COLOR, f"P{t} deciding") for t, b in people])
        self.segments.write_frame(self.index, drawn)
        if self.hooks.on_frame is not None:
            self.hooks.on_frame(self.info.name, self.index, drawn)

    def _gallery_changed(self) -> None:
        version, identities = self.hooks.gallery()
        if version != self.gallery_version:  # from the next decision on, the new gallery
            self.gallery_version = version
            self.book.identities = identities
            self.book.colors.update({i.name: i.key for i in identities})

    def step(self, frame: np.ndarray, arrived: float) -> None:
        """The next frame, ``arrived`` when (time.monotonic()): both halves in this process."""
        self.consume(self.producer(frame, arrived))

    def consume(self, h: CameraStep) -> None:
        """One frame's hand-off from the producer: decisions, events, the drawn frame, the ended tracks closed."""
        if self.hooks.gallery is not None:
            self._gallery_changed()
        self.index = h.index
        # the hand-off's arrival in this process's clock (the producer may be on another machine)
        arrived = self.arrived = time.monotonic() - max(0.0, time.time() - h.wall)
        self.segments.roll(h.index)
        tracked = h.tracked
        self.mot.write(h.index, tracked.xyxy, tracked.confidence, tracked.track_id)
        self.spans = dict(h.spans)
        for tid in tracked.track_id.tolist():
            self.walls.setdefault(tid, [h.wall, h.wall])[1] = h.wall
        # the rule over every open track at its current span
        changed = self.book.update({t: (s[0], s[1]) for t, s in self.spans.items()}, list(h.new))
        for d in changed:
            self._emit(d, arrived, self.book.latest[d.probe_track].n_frames)
        if changed:  # (also a decision redone for a conflict, with no new embedding: the others must see it)
            self._share()
        self._draw(h.image(), tracked, h.poses)
        if h.ended:
            self._close_tracks(h.ended, arrived)

    def abandon(self) -> None:
        """After a failure: everything written so far stays; the run folder is finalized as incomplete."""
        self.segments.abandon()

    def close(self) -> CameraResult:
        """The open tracks closed with their final decisions (latency from the last frame's arrival), the segments
        closed; the camera's result."""
        try:
            self.finish(self._end())
        except BaseException:
            self.abandon()
            raise
        entries = self.segments.close()
        return self._camera_result(entries)

    def _end(self) -> CameraEnd:
        """The producer's end (none here when the caller feeds ``consume`` and gave ``finish`` the end itself)."""
        return self.producer.finish() if self.producer is not None else CameraEnd((), {})

    def finish(self, end: CameraEnd) -> None:
        """The producer's end: its open tracks closed (latency from the last frame's arrival), its timings kept."""
        if self.producer is None:  # a remote producer's times (in process they were added here as they went)
            for k, v in end.timings.items():
                self.tm[k] += v
        if end.ended:
            self._close_tracks(end.ended, self.arrived)

    def _camera_result(self, entries: list[dict]) -> CameraResult:
        src, info, result = self.src, self.info, self.result
        wall = time.monotonic() - self.start
        self.tm["total"] = wall
        result.tracks = dict(sorted(result.tracks.items()))
        result.info = VideoInfo(**{**info.__dict__, "frames": src.count})
        # the run's decisions are the final ones made as each track closed (what the events files announced)
        decisions = [self.finals.get(t) or Decision.too_short(info.name, t) for t in result.tracks]
        lc = self.lc
        stats = {"source": src.spec, "frames": src.count, "frames_dropped": src.dropped,
                 "frames_skipped": src.skipped, "reconnects": src.reconnects, "wall_s": round(wall, 2),
                 "fps": round(src.count / wall, 2) if wall > 0 else None, "events": self.n_events,
                 "latency_s": self.latencies.summary(), "segment_s": lc.segment_s, "segments": entries,
                 "window": {"min": lc.window_min, "step": lc.step, "size": lc.window}, "tracks_let_go": self.let_go}
        self.partial["live"][info.name] = stats
        seg = self.segments
        outputs = {"result_video": entries[0]["result_video"], "result_videos": seg.files("result_video"),
                   "events": seg.files("events"), "tracks_file": entries[0]["tracks_file"],
                   "tracks_files": seg.files("tracks_file")}
        log.info("%s: %d frames in %.1f s (%.1f frames/s, %d dropped), %d events, %d segment(s), median latency "
                 "%s s", info.name, src.count, wall, stats["fps"] or 0, src.dropped, self.n_events, len(entries),
                 stats["latency_s"].get("median"))
        return CameraResult(result, decisions, stats, outputs, self.final_events)


class PendingCamera:
    """A camera that did not answer at the start: a thread keeps trying to open it (backoff doubling from 2 s to
    30 s, each failure logged) until it answers or the loop ends; ``make(source)`` then builds its LiveCamera."""

    def __init__(self, spec: str, reconnect_s: float, make, opener=None) -> None:
        """``opener()`` → the opened source, or a UserError (default: open the stream here)."""
        self.spec, self.make, self.opener = spec, make, opener
        self.source = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._retry, args=(reconnect_s,), name=f"retry-{spec}", daemon=True)
        self._thread.start()

    def _retry(self, reconnect_s: float) -> None:
        from allinone.errors import UserError
        from allinone.io.video import open_stream
        wait = 2.0
        while not self._stop.wait(wait):
            try:
                self.source = self.opener() if self.opener is not None else open_stream(self.spec, reconnect_s)
                log.warning("%s: answered; watching it from now on", self.spec)
                return
            except UserError as exc:
                log.warning("%s; trying again in %.0f s", exc, min(wait * 2, 30.0))
            wait = min(wait * 2, 30.0)

    def stop(self) -> None:
        self._stop.set()


def watch_cameras(cameras: list[LiveCamera], deadline: float | None = None,
                  pending: list[PendingCamera] = ()) -> list[CameraResult]:
    """Several cameras in one loop until every stream has ended, ``deadline`` (time.monotonic()) or Ctrl-C: each
    camera's frames are read by its own thread and taken in turn, one per camera per round, so a busy camera never
    starves the others (each drops its own oldest frames when the loop falls behind: StreamSource). A ``pending``
    camera joins the loop once it answers. Then every camera is closed; a failure leaves each camera's files as
    written (``abandon``)."""
    wake = threading.Event()
    feeds = [cam.src.feed(wake) for cam in cameras]
    waiting = list(pending)
    try:
        try:
            _round_robin(cameras, feeds, wake, deadline, waiting)
        except KeyboardInterrupt:
            log.warning("interrupted: finishing the run folder with what was seen so far")
        finally:
            for p in waiting:
                p.stop()
            for feed in feeds:
                feed.close()
        return [cam.close() for cam in cameras]
    except BaseException:
        for cam in cameras:
            cam.abandon()
        raise


def _round_robin(cameras: list[LiveCamera], feeds: list, wake: threading.Event, deadline: float | None,
                 waiting: list[PendingCamera]) -> None:
    while (waiting or any(not f.ended for f in feeds)) and (deadline is None or time.monotonic() < deadline):
        for p in [p for p in waiting if p.source is not None]:  # a camera that answered joins the loop
            waiting.remove(p)
            cameras.append(p.make(p.source))
            feeds.append(cameras[-1].src.feed(wake))
        wake.clear()
        took = False
        for cam, feed in zip(cameras, feeds):
            item = feed.take()
            if item is not None:
                cam.step(*item)
                took = True
        if not took:
            wake.wait(0.1)


__all__ = ["CameraResult", "LatencyHistogram", "LiveCamera", "PendingCamera", "RANKING_KEPT", "watch_cameras"]
