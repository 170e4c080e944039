"""Batched detection (the GPU path) on the CPU: frames detected together, then tracked in order, give exactly what
frame-by-frame detection gives."""
from __future__ import annotations

import cv2
import numpy as np

from allinone.config import DetectConfig, GaitConfig, MatchConfig, RunConfig, SegmentConfig
from allinone.detect import build_detector
from allinone.runner.runner import run


def _frames(path, n):
    cap = cv2.VideoCapture(str(path))
    out = [cap.read()[1] for _ in range(n)]
    cap.release()
    return out


def test_ultralytics_batch_equals_frame_by_frame(shared):
    # a YOLO11n built from ultralytics' own model description (random weights: no download), real frames
    det = build_detector("yolo11n.yaml", DetectConfig(score_threshold=0.001), "cpu")
    frames = _frames(shared / "fixtures/videos/demo4.mp4", 3)
    together = det.batch(frames)
    alone = [det.batch([f])[0] for f in frames]
    assert len(together) == 3
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)


def test_pipeline_with_detection_batches_gives_the_same_run(tmp_path, shared, random_gaitbase):
    v = shared / "fixtures/videos"

    def once(batch: int) -> tuple[str, dict]:
        config = RunConfig(gallery=v / "demo1.mp4", probes=(v / "demo4.mp4",), output=tmp_path, name=f"b{batch}",
                           quiet=True, download=False, render=False,
                           detect=DetectConfig(model=str(shared / "weights/yolox_nano.onnx"), batch=batch),
                           segment=SegmentConfig(model=str(shared / "weights/pphumanseg_onnx_model.onnx")),
                           gait=GaitConfig(model=str(random_gaitbase), batch=batch),
                           match=MatchConfig(threshold=1e9))
        res = run(config)
        mot = (res.run_dir / "tracks/demo4.txt").read_text()
        feats = {t["id"]: np.load(res.run_dir / t["feature"]) for t in res.manifest["videos"][1]["tracks"]
                 if "feature" in t}
        return mot, feats

    mot1, f1 = once(1)
    mot5, f5 = once(5)  # 211 frames: 42 batches of 5 and a last one of 1; tracks left at the end embedded together
    assert mot5 == mot1 and mot1
    assert f5.keys() == f1.keys()
    for k in f1:
        np.testing.assert_allclose(f5[k], f1[k], rtol=1e-4, atol=1e-5)


def test_gait_batches_of_tracks_equal_one_by_one(random_gaitbase, shared):
    """The GPU path embeds tracks of equal length together: on the CPU the same code gives the same embeddings."""
    from allinone.gait.checkpoint import GaitEmbedder
    from tests.helpers import aligned_fixture_sequences
    seqs = [s[:20] for s in aligned_fixture_sequences(shared).values()][:5] + [next(iter(
        aligned_fixture_sequences(shared).values()))[:13]]
    emb = GaitEmbedder(GaitConfig(model=str(random_gaitbase)), "cpu")
    together = emb(seqs, batch=8)  # five of 20 frames in one forward, the 13-frame one alone
    alone = emb(seqs, batch=1)
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
