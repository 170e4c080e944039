"""Default weights from the checkpoints folder: the bare two-argument command, the offline message, `weights`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allinone.gait.checkpoint import save_gaitbase_checkpoint
from allinone.gait.gaitbase import GaitBase
from allinone.io.weights import default_models
from tests.helpers import write_video

REPO = Path(__file__).resolve().parents[2]


def _main(args: list[str], checkpoints: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALLINONE_CHECKPOINTS": str(checkpoints), "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def filled_checkpoints(tmp_path_factory, shared) -> Path:
    """A checkpoints folder holding a file for every default model, under the manifest's names: a randomly
    initialised GaitBase in OpenGait's format, the shared PP-HumanSeg Paddle folder (same format as v2), and a
    YOLO11n built from ultralytics' own yaml (random weights; the official file cannot be downloaded here)."""
    root = tmp_path_factory.mktemp("checkpoints")
    specs = {s.key: s for s in default_models()}
    torch.manual_seed(0)
    save_gaitbase_checkpoint(GaitBase(class_num=7), specs["gait"].path(root))
    shutil.copytree(shared / "weights/pphumanseg_v1_lite_192x192_with_softmax", specs["seg"].path(root))
    from ultralytics import YOLO
    YOLO("yolo11n.yaml").save(str(specs["detector"].path(root)))
    return root


def test_bare_command_uses_the_checkpoints_folder(tmp_path, filled_checkpoints):
    g = write_video(tmp_path / "g.mp4", 8, size_wh=(320, 240))
    p = write_video(tmp_path / "p.mp4", 6, size_wh=(320, 240), seed=3)
    res = _main(["--gallery", str(g), "--probe", str(p)], filled_checkpoints, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run_dir = Path(res.stdout.strip().splitlines()[-1])
    if not run_dir.is_absolute():
        run_dir = tmp_path / run_dir
    assert run_dir.parent == tmp_path / "output"  # default output root, relative to where the user runs it
    m = json.loads((run_dir / "run.json").read_text())
    specs = {s.key: s for s in default_models()}
    assert Path(m["weights"]["detector"]["path"]) == specs["detector"].path(filled_checkpoints)
    assert Path(m["weights"]["segmenter"]["path"]) == specs["seg"].path(filled_checkpoints)
    assert Path(m["weights"]["gait"]["path"]) == specs["gait"].path(filled_checkpoints)
    assert [v["frames"] for v in m["videos"]] == [8, 6]
    assert "matches" in m


def test_offline_message_lists_every_missing_file(tmp_path, shared):
    empty = tmp_path / "ck"
    empty.mkdir()
    res = _main(["--gallery", str(shared / "fixtures/videos/demo1.mp4"),
                 "--probe", str(shared / "fixtures/videos/demo2.mp4"), "--no-download",
                 "--output", str(tmp_path / "out")], empty, cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    for spec in default_models():
        assert spec.url in res.stderr
        assert str(spec.path(empty)) in res.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert list(empty.iterdir()) == []  # nothing half-downloaded


def test_offline_message_skips_models_given_on_the_command_line(tmp_path, shared):
    empty = tmp_path / "ck"
    empty.mkdir()
    res = _main(["--gallery", str(shared / "fixtures/videos/demo1.mp4"),
                 "--probe", str(shared / "fixtures/videos/demo2.mp4"), "--no-download",
                 "--detector", str(shared / "weights/yolox_nano.onnx"),
                 "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"),
                 "--output", str(tmp_path / "out")], empty, cwd=tmp_path)
    assert res.returncode == 2
    specs = {s.key: s for s in default_models()}
    assert specs["gait"].url in res.stderr
    assert specs["detector"].url not in res.stderr and specs["seg"].url not in res.stderr


def test_weights_command_lists_status(tmp_path, filled_checkpoints):
    res = _main(["weights"], filled_checkpoints, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    for spec in default_models():
        assert spec.url in res.stdout
    assert "missing" not in res.stdout
    empty = tmp_path / "none"
    empty.mkdir()
    res = _main(["weights", "--checkpoints", str(empty)], filled_checkpoints, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stdout.count("missing") >= 3


def test_one_batch_rule_for_detector_gait_and_evaluate():
    from allinone.io.devices import GPU_BATCH, default_batch
    assert default_batch(0, "cpu") == 1 and default_batch(0, None) == 1
    assert default_batch(0, "cuda") == GPU_BATCH == default_batch(0, "cuda:0")
    assert default_batch(3, "cpu") == 3 and default_batch(3, "cuda") == 3  # the user's number wins
