"""The live path: one stream (RTSP, HTTP, webcam) decided while it plays.

Per frame, as it arrives: detect → track → silhouettes (segmented at once, no batching across frames) → for each
track that has gained `step` silhouettes since its last decision (and has at least `window_min`), one gait forward
on its latest `window` silhouettes, then the decision rule over the tracks in view (decide/match.py) → every changed
decision is appended to events.jsonl → the frame is drawn with the current decisions and written to the result
video. Tracks that end are saved (their last window's pickle, and as feature the embedding of their last
decision) and let go, so memory stays flat.

The run ends when the stream ends (after reconnecting failed), after --duration, or on Ctrl-C; the run folder is
then completed as for files, with the final decisions (the rule over every track's last embedding) in run.json.
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np

from allinone.config import RunConfig
from allinone.records import Decision, Embedding, Identity, VideoInfo
from allinone.decide.threshold import Threshold
from allinone.io.video import VideoSink
from allinone.results.render import UNKNOWN_COLOR, Box, decision_box, draw
from allinone.stages.silhouettes import SilhouetteStage
from allinone.stages.step import FrameStep, TrackCloser, VideoResult
from allinone.stages.track import ByteTracker

log = logging.getLogger(__name__)


def _percentiles(x: list[float]) -> dict:
    if not x:
        return {"n": 0}
    a = np.asarray(x)
    return {"n": len(a), "median": round(float(np.median(a)), 4), "p95": round(float(np.percentile(a, 95)), 4),
            "max": round(float(a.max()), 4)}


def run_stream(src, info: VideoInfo, config: RunConfig, stages, writer, identities: list[Identity],
               threshold: Threshold, gallery_name: str):
    """Process the stream until it ends; returns (VideoResult, final decisions, live stats, outputs)."""
    lc = config.live
    result = VideoResult(info=info)
    tm = result.timings
    tracker = ByteTracker(config.track, src.fps)
    stage = SilhouetteStage(stages.segmenter, config.segment, config.quality, config.track.high_threshold)
    cutter = stage.video(src.fps, (src.height, src.width), None, tm, keep=lc.window, window=True)
    result.silhouette_stride = cutter.stride
    mot = writer.mot_writer(f"tracks/{info.name}.txt")
    step = FrameStep(stages, tracker, mot, tm)
    outputs = {"result_video": f"G-{gallery_name}_P-{info.name}.mp4", "events": "events.jsonl"}
    sink = VideoSink(writer.path(outputs["result_video"]), src.fps, (src.width, src.height))
    events = open(writer.path(outputs["events"]), "a", encoding="utf-8")
    close = TrackCloser(config, stages, writer, result)
    colors = {i.name: i.key for i in identities}
    spans = step.spans
    decided_at: dict[int, int] = defaultdict(int)  # silhouettes a track had at its last decision
    latest: dict[int, Embedding] = {}
    current: dict[int, Decision] = {}
    latencies: list[float] = []
    gap = tracker.buffer + 2
    n_events = 0
    start = time.monotonic()
    index = -1

    def emit(d: Decision, frame_index: int, arrived: float, n_sil: int) -> None:
        nonlocal n_events
        now = time.monotonic()
        latencies.append(now - arrived)
        events.write(json.dumps({"wall_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                                 "frame": frame_index + 1, "track": d.probe_track, "status": d.status,
                                 "identity": d.identity,
                                 "distance": None if d.distance is None else round(float(d.distance), 6),
                                 "reason": d.reason, "silhouettes": n_sil,
                                 "latency_s": round(now - arrived, 4)}, allow_nan=False) + "\n")
        events.flush()
        n_events += 1

    def finish(tid: int) -> None:
        sil, crop = cutter.take(tid)
        last = latest.pop(tid, None)  # its last decision's embedding: saved as its feature, not computed again
        close(tid, spans.pop(tid), sil, crop, None, None if last is None else last.feature)
        if last is not None:  # that embedding, with the track's full span, takes part in the final decisions
            tr = result.tracks[tid]
            tr.embedding = Embedding(last.video, tid, last.feature, last.n_frames, tr.first_frame, tr.last_frame)
        current.pop(tid, None)

    try:
        try:
            for frame, arrived in src.frames():
                index += 1
                dets, tracked = step(frame, index)
                cutter.add(frame, index, tracked, dets)
                cutter.flush()  # every frame: a decision must not wait for a batch to fill
                redone = set()
                for tid in tracked.track_id.tolist():
                    n = cutter.silhouettes_total(tid)
                    if n >= lc.window_min and (tid not in latest or n - decided_at[tid] >= lc.step):
                        sil = cutter.window_of(tid)
                        t4 = time.perf_counter()
                        feat = np.asarray(stages.embedder([sil.aligned])[0], np.float32)
                        tm["embed"] += time.perf_counter() - t4
                        latest[tid] = Embedding(info.name, tid, feat, len(sil), spans[tid][0], spans[tid][1])
                        decided_at[tid] = n
                        redone.add(tid)
                if redone:  # the rule over the tracks in view (they overlap in time: never one identity twice)
                    live = [latest[t] for t in sorted(latest)]
                    for d in stages.matcher(live, identities, threshold.value):
                        old = current.get(d.probe_track)
                        moved = old is None or (old.status, old.identity, old.reason) != (d.status, d.identity,
                                                                                           d.reason)
                        if d.probe_track in redone or moved:
                            emit(d, index, arrived, latest[d.probe_track].n_frames)
                        current[d.probe_track] = d
                people = [(int(t), b) for t, b in zip(tracked.track_id, tracked.xyxy)]
                sink.write(draw(frame, [decision_box(b, t, current[t], colors) if t in current
                                        else Box(b, UNKNOWN_COLOR, f"P{t} deciding")
                                        for t, b in people]))
                for tid in cutter.ended(index, gap):
                    finish(tid)
                if lc.duration_s and time.monotonic() - start >= lc.duration_s:
                    src.stop()
        except KeyboardInterrupt:
            log.warning("interrupted: finishing the run folder with what was seen so far")
            src.stop()
        for tid in sorted(spans):
            finish(tid)
    except BaseException:
        sink.discard()
        raise
    finally:
        mot.close()
        events.close()
    sink.close()
    wall = time.monotonic() - start
    tm["total"] = wall
    result.tracks = dict(sorted(result.tracks.items()))
    result.info = VideoInfo(**{**info.__dict__, "frames": src.count})
    # final decisions: the rule over every track's last embedding, over the whole stream
    final_emb = [result.tracks[t].embedding for t in result.tracks if result.tracks[t].embedding is not None]
    decided = {d.probe_track: d for d in stages.matcher(final_emb, identities, threshold.value)}
    decisions = [decided.get(t) or Decision(info.name, t, "too_short", None, None, "too_few_silhouettes", [])
                 for t in result.tracks]
    stats = {"source": src.spec, "frames": src.count, "frames_dropped": src.dropped, "reconnects": src.reconnects,
             "wall_s": round(wall, 2), "fps": round(src.count / wall, 2) if wall > 0 else None, "events": n_events,
             "latency_s": _percentiles(latencies),
             "window": {"min": lc.window_min, "step": lc.step, "size": lc.window}}
    log.info("%s: %d frames in %.1f s (%.1f frames/s, %d dropped), %d events, median latency %s s", info.name,
             src.count, wall, stats["fps"] or 0, src.dropped, n_events, stats["latency_s"].get("median"))
    return result, decisions, stats, outputs


__all__ = ["run_stream"]
