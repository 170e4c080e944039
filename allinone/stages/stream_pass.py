"""The live path: one stream (RTSP, HTTP, webcam) decided while it plays.

Per frame, as it arrives: detect → track → silhouettes (segmented at once, no batching across frames) → for each
track that has gained `step` silhouettes since its last decision (and has at least `window_min`), one gait forward
on its latest `window` silhouettes, then the decision rule over the open tracks at their current spans
(stages/live_decisions.py; also whenever spans that grew make two tracks in view hold one identity) → every
changed decision is appended to the events file → the frame is drawn with the current decisions and written to the
result video. Tracks that end are saved (their last window's pickle, and as feature the embedding of their last
decision), closed with a final decision (an event with "final": true) and let go, so memory stays flat.

Events, MOT rows and the result video are written in segments (io/segments.py, LiveConfig.segment_s). The run
ends when the stream ends (after reconnecting failed), after --duration, or on Ctrl-C; the run folder is then
completed as for files, with the final decisions in run.json. Any failure from the stream's start on (a second
Ctrl-C while finishing included) leaves the folder with everything written so far and run.json
``status: "incomplete"`` (RunWriter.keep_if_interrupted).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import numpy as np

from allinone.config import RunConfig
from allinone.records import Decision, DecisionEvent, Embedding, Identity, VideoInfo
from allinone.decide.threshold import Threshold
from allinone.io.segments import MotProxy, Segments
from allinone.results.render import UNKNOWN_COLOR, Box, decision_box, draw, draw_poses
from allinone.stages.live_decisions import LiveDecisions
from allinone.stages.keypoints import KeypointStage
from allinone.stages.silhouettes import SilhouetteStage
from allinone.stages.step import FrameStep, TrackCloser, VideoResult
from allinone.stages.track import ByteTracker

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


def run_stream(src, info: VideoInfo, config: RunConfig, stages, writer, identities: list[Identity],
               threshold: Threshold, gallery_name: str, lookup=None, sinks=None):
    """Process the stream until it ends; returns (VideoResult, final decisions, live stats, outputs, the final
    decisions' events by (stream, track)). ``lookup``: for a large gallery file, embeddings → the identities to
    compare them with (its index), asked at each decision in place of ``identities``. ``sinks``: each event also
    goes there (sinks/base.py Sinks) as it is written to the events file."""
    lc = config.live
    result = VideoResult(info=info)
    tm = result.timings
    tracker = ByteTracker(config.track, src.fps)
    poses = stages.segmenter is None and stages.pose is not None  # a keypoint gait model (GaitGraph)
    if poses:
        cutter = KeypointStage(stages.pose, config.segment.target_fps).video(src.fps, tm, keep=lc.window,
                                                                             window=True)
    else:
        stage = SilhouetteStage(stages.segmenter, config.segment, config.quality, config.track.high_threshold)
        cutter = stage.video(src.fps, (src.height, src.width), None, tm, keep=lc.window, window=True)
    result.silhouette_stride = cutter.stride
    segments = Segments(writer, info.name, f"G-{gallery_name}_P-{info.name}", src.fps, (src.width, src.height),
                        lc.segment_s, keyframe_s=lc.keyframe_s)
    partial = {"live": {info.name: {"source": src.spec, "segments": segments.entries}}}
    writer.keep_if_interrupted(partial)  # from here on a failure finalizes the folder as incomplete, never deletes
    step = FrameStep(stages, tracker, MotProxy(segments), tm)
    close = TrackCloser(config, stages, writer, result)
    spans = step.spans
    book = LiveDecisions(stages.matcher, identities, threshold.value, info.name, lookup)
    colors = book.colors
    decided_at: dict[int, int] = {}  # silhouettes an open track had at its last embedding
    finals: dict[int, Decision] = {}
    final_events: dict[tuple[str, int], DecisionEvent] = {}
    latencies = LatencyHistogram()
    gap = tracker.buffer + 2
    n_events = 0
    start = time.monotonic()
    index = -1

    def emit(d: Decision, frame_index: int, arrived: float, n_sil: int | None, final: bool = False) -> None:
        nonlocal n_events
        now = time.monotonic()
        latencies.add(now - arrived)
        span = spans.get(d.probe_track)
        tr = result.tracks.get(d.probe_track)  # a closing track's span left `spans` with it
        span = (span[0] + 1, span[1] + 1) if span is not None else (tr.first_frame + 1, tr.last_frame + 1)
        event = DecisionEvent.of(d, span, n_sil, final)
        # the events file's row: the event, and when in the stream and how late it was decided
        segments.write_event(json.dumps({**event.to_json(), "frame": frame_index + 1,
                                         "latency_s": round(now - arrived, 4)}, allow_nan=False))
        if sinks:
            sinks.on_event(event)
        if final:
            final_events[(event.stream, event.track)] = event
        n_events += 1

    def finish(tids: list[int], frame_index: int, arrived: float) -> None:
        """Close ended tracks: saved, then their final decision (the rule with them at their full span)."""
        closing = {}
        for tid in tids:
            sil, crop = cutter.take(tid)
            last = book.latest.get(tid)  # its last decision's embedding: saved as its feature, not computed again
            feat = None if last is None else last.feature
            if poses:
                close(tid, spans.pop(tid), None, crop, None, feat, sil)
            else:
                close(tid, spans.pop(tid), sil, crop, None, feat)
            tr = result.tracks[tid]
            if last is not None:  # that embedding, with the track's full span, decides it for good
                tr.embedding = Embedding(last.video, tid, last.feature, last.n_frames, tr.first_frame, tr.last_frame)
            closing[tid] = tr.embedding
            tr.crop = tr.gei = None  # written to pictures/ already: memory stays flat
            decided_at.pop(tid, None)
        lengths = {t: (e.n_frames if e is not None else None) for t, e in closing.items()}
        out, done = book.close(closing, {t: (s[0], s[1]) for t, s in spans.items()})
        for d in out:
            n = lengths[d.probe_track] if d.probe_track in closing else book.latest[d.probe_track].n_frames
            emit(d, frame_index, arrived, n, d.probe_track in closing)
        # kept until the run's end, so kept small: the nearest RANKING_KEPT identities, not the whole gallery's
        finals.update({t: replace(d, ranking=d.ranking[:RANKING_KEPT]) for t, d in done.items()})
        for tid in closing:
            result.tracks[tid].embedding = None  # saved as features/…npy and decided for good: memory stays flat

    arrived = time.monotonic()
    try:
        try:
            for frame, arrived in src.frames(deadline=start + lc.duration_s if lc.duration_s else None):
                index += 1
                segments.roll(index)
                dets, tracked = step(frame, index)
                cutter.add(frame, index, tracked, dets)
                cutter.flush()  # every frame: a decision must not wait for a batch to fill
                new = []
                for tid in tracked.track_id.tolist():
                    n = cutter.silhouettes_total(tid)
                    if n >= lc.window_min and (tid not in book.latest or n - decided_at.get(tid, 0) >= lc.step):
                        sil = cutter.window_of(tid)
                        t4 = time.perf_counter()
                        seq = sil.stacked() if poses else sil.aligned
                        feat = np.asarray(stages.embedder([seq])[0], np.float32)
                        tm["embed"] += time.perf_counter() - t4
                        new.append(Embedding(info.name, tid, feat, len(sil), spans[tid][0], spans[tid][1]))
                        decided_at[tid] = n
                # the rule over every open track at its current span
                for d in book.update({t: (s[0], s[1]) for t, s in spans.items()}, new):
                    emit(d, index, arrived, book.latest[d.probe_track].n_frames)
                people = [(int(t), b) for t, b in zip(tracked.track_id, tracked.xyxy)]
                current = book.current
                if poses:
                    draw_poses(frame, cutter.latest, {t: decision_box(b, t, current[t], colors).color
                                                      if t in current else UNKNOWN_COLOR for t, b in people})
                segments.write_frame(index, draw(frame, [decision_box(b, t, current[t], colors) if t in current
                                                         else Box(b, UNKNOWN_COLOR, f"P{t} deciding")
                                                         for t, b in people]))
                ended = cutter.ended(index, gap)
                if ended:
                    finish(sorted(ended), index, arrived)
        except KeyboardInterrupt:
            log.warning("interrupted: finishing the run folder with what was seen so far")
            src.stop()
        if spans:  # latency of these final events: from the last frame's arrival
            finish(sorted(spans), index, arrived)
    except BaseException:
        segments.abandon()  # everything written so far stays; the run folder is finalized as incomplete
        raise
    entries = segments.close()
    wall = time.monotonic() - start
    tm["total"] = wall
    result.tracks = dict(sorted(result.tracks.items()))
    result.info = VideoInfo(**{**info.__dict__, "frames": src.count})
    # the run's decisions are the final ones made as each track closed (what events.jsonl announced)
    decisions = [finals.get(t) or Decision.too_short(info.name, t)
                 for t in result.tracks]
    stats = {"source": src.spec, "frames": src.count, "frames_dropped": src.dropped, "reconnects": src.reconnects,
             "wall_s": round(wall, 2), "fps": round(src.count / wall, 2) if wall > 0 else None, "events": n_events,
             "latency_s": latencies.summary(), "segment_s": lc.segment_s, "segments": entries,
             "window": {"min": lc.window_min, "step": lc.step, "size": lc.window}}
    partial["live"][info.name] = stats
    outputs = {"result_video": entries[0]["result_video"], "result_videos": segments.files("result_video"),
               "events": segments.files("events"), "tracks_file": entries[0]["tracks_file"],
               "tracks_files": segments.files("tracks_file")}
    log.info("%s: %d frames in %.1f s (%.1f frames/s, %d dropped), %d events, %d segment(s), median latency %s s",
             info.name, src.count, wall, stats["fps"] or 0, src.dropped, n_events, len(entries),
             stats["latency_s"].get("median"))
    return result, decisions, stats, outputs, final_events


__all__ = ["LatencyHistogram", "run_stream"]
