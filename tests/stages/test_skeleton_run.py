"""SkeletonGait++ in the product: each silhouette with the skeleton maps of its own frame's pose, a run from videos
with a real pose model (MoveNet) and a random SkeletonGait++ checkpoint, and the refusals that need no model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from allinone.gait.skeleton_maps import skeleton_maps
from allinone.gait.skeletongait import SkeletonGaitPP
from allinone.records import Keypoints, Silhouettes
from allinone.stages.step import skeleton_sequence
from tests.test_cli import run_main


def _pose(t: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Standing-person-like keypoints: a column of joints with some spread, in frame pixels."""
    base = np.stack([np.full(17, 200.0), np.linspace(50, 350, 17)], axis=1)
    return (base[None] + rng.normal(0, 6, (t, 17, 2))).astype(np.float32), rng.uniform(0.3, 1, (t, 17)).astype(
        np.float32)


def test_each_silhouette_gets_the_maps_of_its_own_frame():
    rng = np.random.default_rng(0)
    xy, conf = _pose(5, rng)
    kp = Keypoints(1, np.array([0, 1, 2, 3, 5]), xy, conf)
    aligned = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    sil = Silhouettes(1, aligned, np.array([0, 2, 4, 5]))  # frame 4 has no pose
    seq = skeleton_sequence(sil, kp)
    assert seq.shape == (3, 3, 64, 64) and seq.dtype == np.uint8
    assert np.array_equal(seq[:, 2], aligned[[0, 1, 3]])  # the silhouettes of frames 0, 2 and 5
    assert np.array_equal(seq[:, :2], skeleton_maps(xy[[0, 2, 4]], conf[[0, 2, 4]]))  # poses of frames 0, 2, 5
    assert skeleton_sequence(Silhouettes(1, aligned[:1], np.array([4])), kp) is None
    assert skeleton_sequence(sil, None) is None


@pytest.fixture(scope="module")
def skeleton_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sg") / "sg.pt"
    torch.save({"model": SkeletonGaitPP(7, (1, 1, 1, 1), 16).state_dict(), "iteration": 1}, path)
    return path


def test_a_run_with_skeletongait_embeds_silhouettes_with_maps(shared, tmp_path, skeleton_ckpt):
    out = tmp_path / "out"
    res = run_main("--gallery", str(shared / "fixtures/videos/demo2.mp4"),
                   "--probe", str(shared / "fixtures/videos/demo1.mp4"), "--gait-model", str(skeleton_ckpt),
                   "--pose-model", str(shared / "weights/movenet_singlepose_lightning_int8.tflite"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--threshold", "0.5",
                   "--output", str(out), "--name", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    run = json.loads((out / "r/run.json").read_text())
    assert run["weights"]["gait"]["arch"] == "skeletongait++"
    feats = sorted((out / "r/features").rglob("*.npy"))
    assert feats and all(np.load(f).shape == (64, 16) for f in feats)
    assert run["matches"] and all(np.isfinite(m["distance"]) for m in run["matches"] if m["distance"] is not None)


def test_skeletongait_without_a_pose_model_offline_and_on_a_stream_is_one_line(shared, tmp_path, skeleton_ckpt):
    empty = tmp_path / "ck"
    empty.mkdir()
    common = ("--gallery", str(shared / "fixtures/videos/demo2.mp4"), "--gait-model", str(skeleton_ckpt),
              "--output", str(tmp_path / "out"))
    res = run_main(*common, "--probe", str(shared / "fixtures/videos/demo1.mp4"), "--checkpoints", str(empty),
                   "--no-download")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "pose model" in res.stderr.strip().splitlines()[-1], res.stderr
    res = run_main(*common, "--probe", "rtsp://127.0.0.1:9/cam")
    assert res.returncode == 2 and "not yet on live streams" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
