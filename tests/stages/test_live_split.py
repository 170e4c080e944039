"""A live camera split in two (stages/stream_pass.py CameraProducer → stages/live_handoff.py CameraStep → LiveCamera's
consumer) decides the same whether both halves run in one process (the local engine) or the hand-offs are pickled
with their frames JPEG-encoded, as ``watch --engine ray`` ships them from a node's actor to the head."""
from __future__ import annotations

import json
import pickle
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest

from allinone.config import DetectConfig, GaitConfig, LiveConfig, MatchConfig, RunConfig, SegmentConfig
from allinone.decide.threshold import Threshold
from allinone.io.run_folder import RunWriter
from allinone.io.video import VideoSource
from allinone.records import Detections, Embedding, Identity, VideoInfo
from allinone.stages.build import build_stages
from allinone.stages.live_handoff import CameraStep
from allinone.stages.stream_pass import CameraProducer, LiveCamera

FRAMES = 50  # demo4's walker is tracked and embedded several times in its first 2 s


class _Src:
    spec, count, dropped, skipped, reconnects = "loop:demo4", FRAMES, 0, 0, 0

    def __init__(self, fps: float, hw: tuple[int, int]) -> None:
        self.fps, (self.height, self.width) = fps, hw


def _events(cam: LiveCamera, writer: RunWriter) -> list[dict]:
    rows = [json.loads(x) for f in cam.segments.files("events") for x in writer.path(f).read_text().splitlines()]
    for r in rows:  # when it was decided differs between runs; what was decided must not
        r.pop("latency_s"), r.pop("wall_time", None)
    return rows


def test_producer_pickled_to_consumer_decides_as_in_process(tmp_path, shared, random_gaitbase):
    v = shared / "fixtures/videos"
    config = RunConfig(gallery=v / "demo1.mp4", probes=(v / "demo4.mp4",), output=tmp_path, quiet=True, download=False, device="cpu",
                       detect=DetectConfig(model=str(shared / "weights/yolox_nano.onnx")),
                       segment=SegmentConfig(model=str(shared / "weights/pphumanseg_onnx_model.onnx")),
                       gait=GaitConfig(model=str(random_gaitbase)), match=MatchConfig(threshold=1e9, min_frames=5),
                       live=LiveConfig(window_min=5, step=5, window=10))
    stages, config = build_stages(config, "cpu")
    src = VideoSource(shared / "fixtures/videos/demo4.mp4")
    frames = [f for _, f in zip(range(FRAMES), src.frames())]
    src = _Src(src.fps, frames[0].shape[:2])
    info = VideoInfo(path="loop:demo4", name="cam", role="probe", frames=0, fps=src.fps, width=src.width,
                     height=src.height)
    # a gallery of two identities, one at the walker's first embedding; any distance matches (threshold 1e9)
    first = CameraProducer(src.fps, (src.height, src.width), "cam", config, stages, defaultdict(float))
    emb = next(e for f in frames for e in first(f.copy(), time.monotonic()).new)
    ann = Identity("Ann", (Embedding("g", 1, emb.feature, 30, 0, 29),))
    far = Identity("Zed", (Embedding("g", 2, emb.feature + 50.0, 30, 0, 29),))
    threshold = Threshold(1e9, "user")

    def camera(writer, stride=None, cfg=config) -> LiveCamera:
        return LiveCamera(src, info, cfg, stages, writer, [ann, far], threshold, "g", {}, stride=stride)

    with RunWriter(tmp_path, "local") as w1, RunWriter(tmp_path, "shipped") as w2, \
            RunWriter(tmp_path, "kept") as w3:
        local = camera(w1)
        for f in frames:
            local.step(f.copy(), time.monotonic())
        a = local.close()
        # the split: every hand-off pickled with its frame as JPEG (what a Ray actor sends the head), then consumed
        producer = CameraProducer(src.fps, (src.height, src.width), "cam", config, stages, defaultdict(float))
        shipped = camera(w2, stride=producer.stride)
        sizes = []
        for f in frames:
            data = pickle.dumps(producer(f.copy(), time.monotonic()).shipped())
            sizes.append(len(data))
            h = pickle.loads(data)
            assert h.frame is None and h.jpeg is not None
            shipped.consume(h)
        shipped.finish(pickle.loads(pickle.dumps(producer.finish())))
        b = shipped.close()
        # a camera that keeps one ended track's row: the older rows leave memory, their events stay in the file
        kept = camera(w3, cfg=replace(config, live=replace(config.live, tracks_kept=1)))
        for f in frames + frames:  # the walk twice: the walker's second pass is another track
            kept.step(f.copy(), time.monotonic())
        c = kept.close()
        ea, eb, ec = _events(local, w1), _events(shipped, w2), _events(kept, w3)
        feats = [(np.load(w1.path(tr.files["feature"])), np.load(w2.path(b.result.tracks[t].files["feature"])))
                 for t, tr in a.result.tracks.items() if "feature" in tr.files]
    assert len(ea) >= 2 and any(e["status"] == "match" for e in ea) and any(e["final"] for e in ea)
    assert ea == eb and a.stats["tracks_let_go"] == 0
    # every track's final event is in the events file; only the last one to end is kept in memory (and run.json)
    finals = [e["track"] for e in ec if e["final"]]
    assert len(finals) >= 2 and list(c.result.tracks) == finals[-1:] and c.stats["tracks_let_go"] == len(finals) - 1
    assert [d.probe_track for d in c.decisions] == finals[-1:] and set(c.events) == {("cam", finals[-1])}
    assert [(d.probe_track, d.status, d.identity, d.distance) for d in a.decisions] == \
        [(d.probe_track, d.status, d.identity, d.distance) for d in b.decisions]
    for tid, tr in a.result.tracks.items():  # the same files, features equal
        assert tr.files.keys() == b.result.tracks[tid].files.keys()
    assert feats
    for x, y in feats:
        np.testing.assert_array_equal(x, y)
    # a 1280x720 frame is 2.7 MB raw; its hand-off with the JPEG (~0.3 MB at quality 90), a fifth of that at most
    assert max(sizes) < 720 * 1280 * 3 / 5, max(sizes)


def test_a_hand_off_is_checked_on_construction():
    tracked = Detections(np.zeros((1, 4)), np.ones(1), np.array([3]))
    frame = np.zeros((4, 4, 3), np.uint8)
    CameraStep(0, 0.0, tracked, {3: (0, 0, 1)}, frame=frame)
    with pytest.raises(ValueError, match="no span"):
        CameraStep(0, 0.0, tracked, {}, frame=frame)
    with pytest.raises(ValueError, match="exactly one"):
        CameraStep(0, 0.0, tracked, {3: (0, 0, 1)})
    with pytest.raises(ValueError, match="HxWx3"):
        CameraStep(0, 0.0, tracked, {3: (0, 0, 1)}, frame=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="track ids"):
        CameraStep(0, 0.0, Detections(np.zeros((1, 4)), np.ones(1)), {3: (0, 0, 1)}, frame=frame)
