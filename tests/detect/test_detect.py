"""Person detection: YOLOX decoding by hand, the real YOLOX-nano on real footage, ultralytics plumbing, bad input."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

os.environ["YOLO_OFFLINE"] = "1"  # before ultralytics is imported anywhere: it must never try the network here

import cv2
import numpy as np
import pytest

from allinone.config import DetectConfig
from allinone.detect import BACKENDS, UltralyticsDetector, YoloxOnnxDetector, backend_for, build_detector
from allinone.detect.yolox_onnx import anchor_grid, check_yolox_io, decode_persons, letterbox, postprocess
from allinone.errors import UserError
from allinone.records import Detections

YOLOX = "weights/yolox_nano.onnx"


def sample_frames(video: Path, step: int, limit: int | None = None) -> list[np.ndarray]:
    """Every ``step``-th frame of a video (decoding the others only as far as needed)."""
    cap = cv2.VideoCapture(str(video))
    out, i = [], 0
    while limit is None or len(out) < limit:
        if i % step == 0:
            ok, frame = cap.read()
            if ok:
                out.append(frame)
        else:
            ok = cap.grab()
        if not ok:
            break
        i += 1
    cap.release()
    assert out, f"no frames decoded from {video}"
    return out


@pytest.fixture(scope="module")
def yolox(shared: Path) -> YoloxOnnxDetector:
    return YoloxOnnxDetector(shared / YOLOX, DetectConfig(score_threshold=0.5), "cpu")


# ---------------------------------------------------------------- YOLOX decoding, checked against hand arithmetic

def _synthetic_head() -> np.ndarray:
    """A raw [3549, 85] head for a 416x416 input with five anchors set; all others have objectness 0.

    Levels: stride 8 → 52x52 rows 0..2703, stride 16 → 26x26 rows 2704..3379, stride 32 → 13x13 rows 3380..3548,
    each row-major (row = offset + gy * grid_w + gx).
    """
    raw = np.zeros((3549, 85), np.float32)

    def put(row, dx, dy, w_cells, h_cells, obj, cls):
        raw[row, :4] = dx, dy, math.log(w_cells), math.log(h_cells)
        raw[row, 4] = obj
        for k, p in cls.items():
            raw[row, 5 + k] = p

    put(2704 + 3 * 26 + 5, 0.25, -0.5, 2, 3, 0.9, {0: 0.8})   # A: stride 16, cell (5, 3), score 0.72
    put(3380 + 1 * 13 + 12, 0.5, 0.5, 4, 8, 0.6, {0: 0.5})    # B: stride 32, cell (12, 1), score 0.30
    put(6 * 52 + 10, 0.0, 0.0, 3, 3, 0.99, {0: 0.05, 2: 0.95})  # C: a confident car, person score 0.0495
    put(5 * 52 + 10, 0.5, 0.0, 4, 6, 0.8, {0: 0.5})           # D: stride 8, cell (10, 5): A's box, score 0.40
    put(2704 + 3 * 26 + 6, 0.25, -0.5, 2, 3, 0.7, {0: 0.7})   # E: A moved one stride-16 cell right, score 0.49
    return raw


# The same anchors' boxes worked out by hand for a 720x1280 (h x w) frame: ratio r = 416 / 1280 = 0.325.
# A: centre ((5 + .25) * 16, (3 - .5) * 16) = (84, 40), size (2 * 16, 3 * 16) = (32, 48) → (68, 16, 100, 64) / r
# B: centre (12.5 * 32, 1.5 * 32) = (400, 48), size (128, 256) → (336, -80, 464, 176) / r
# D: centre (10.5 * 8, 5 * 8) = (84, 40), size (32, 48): exactly A's box
# E: centre (6.25 * 16, 40), size (32, 48) → (84, 16, 116, 64) / r; IoU with A = 768 / 2304 = 1/3
R = 0.325
BOX_A = np.array([68, 16, 100, 64]) / R
BOX_B = np.array([336, -80, 464, 176]) / R
BOX_E = np.array([84, 16, 116, 64]) / R


def test_anchor_grid_layout():
    cells, strides = anchor_grid((416, 640))
    assert cells.shape == (52 * 80 + 26 * 40 + 13 * 20, 2) and strides.shape == (len(cells), 1)
    assert cells[0].tolist() == [0, 0] and cells[1].tolist() == [1, 0] and cells[80].tolist() == [0, 1]
    first16 = 52 * 80
    assert strides[first16 - 1, 0] == 8 and strides[first16, 0] == 16 and cells[first16 - 1].tolist() == [79, 51]
    assert strides[-1, 0] == 32 and cells[-1].tolist() == [19, 12]


def test_letterbox_matches_yolox_preprocessing():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    blob, ratio = letterbox(frame, (416, 416))
    assert blob.shape == (1, 3, 416, 416) and blob.dtype == np.float32 and ratio == pytest.approx(R)
    # 1280 * 0.325 = 416, 720 * 0.325 = 234: the image fills the top 234 rows, the rest is gray 114.
    expected = cv2.resize(frame, (416, 234), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    np.testing.assert_array_equal(blob[0, :, :234].transpose(1, 2, 0), expected)  # BGR kept, no scaling
    assert np.all(blob[0, :, 234:] == 114)
    portrait, ratio = letterbox(frame.transpose(1, 0, 2).copy(), (416, 416), out=blob)  # reuses the buffer
    assert portrait is blob and np.all(blob[0, :, :, 234:] == 114) and not np.all(blob[0, :, :, :234] == 114)
    # 854 x 480 (h x w): r = 416 / 854, width 480 * 416 / 854 = 233.8 → 233 columns (YOLOX truncates).
    letterbox(frame.transpose(1, 0, 2)[:854, :480].copy(), (416, 416), out=blob)
    assert np.all(blob[0, :, :, 233:] == 114) and not np.all(blob[0, :, :, 232] == 114)


def test_decode_matches_hand_calculation():
    cells, strides = anchor_grid((416, 416))
    xyxy, scores = decode_persons(_synthetic_head(), cells, strides, R, score_threshold=0.1)
    order = np.argsort(-scores)
    np.testing.assert_allclose(scores[order], [0.72, 0.49, 0.40, 0.30], rtol=1e-5)  # C (0.0495) is gone
    np.testing.assert_allclose(xyxy[order], np.stack([BOX_A, BOX_E, BOX_A, BOX_B]), atol=1e-3)


def test_postprocess_nms_clip_and_min_height():
    cells, strides = anchor_grid((416, 416))
    raw = _synthetic_head()
    det = postprocess(raw, cells, strides, R, (720, 1280), DetectConfig(score_threshold=0.1, nms_iou=0.45))
    # D duplicates A and is suppressed; E overlaps A at IoU 1/3 and stays; B is clipped to the frame.
    clipped_b = [BOX_B[0], 0, 1280, BOX_B[3]]
    np.testing.assert_allclose(det.xyxy, np.stack([BOX_A, BOX_E, clipped_b]), atol=1e-3)
    np.testing.assert_allclose(det.confidence, [0.72, 0.49, 0.30], rtol=1e-5)
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
    # NMS at IoU 0.3 also removes E (IoU 1/3 with A).
    det = postprocess(raw, cells, strides, R, (720, 1280), DetectConfig(score_threshold=0.1, nms_iou=0.3))
    np.testing.assert_allclose(det.confidence, [0.72, 0.30], rtol=1e-5)
    # A and E are 48 / 0.325 = 147.7 px high, B (clipped) 541.5 px.
    det = postprocess(raw, cells, strides, R, (720, 1280), DetectConfig(score_threshold=0.1, min_box_height=150))
    np.testing.assert_allclose(det.confidence, [0.30], rtol=1e-5)
    det = postprocess(raw, cells, strides, R, (720, 1280), DetectConfig(score_threshold=0.5))
    np.testing.assert_allclose(det.confidence, [0.72], rtol=1e-5)


def test_real_model_outputs_raw_head_with_sigmoid_scores(yolox: YoloxOnnxDetector, shared: Path):
    """The export carries sigmoid objectness/class scores and undecoded box offsets, as the decoder assumes."""
    frame = sample_frames(shared / "fixtures/videos/plaza_gallery_boxed.mp4", 1, limit=1)[0]
    blob, _ = letterbox(frame, yolox.input_hw)
    raw = yolox.session.run(None, {"images": blob})[0][0]
    assert raw.shape == (3549, 85)
    assert raw[:, 4:].min() >= 0 and raw[:, 4:].max() <= 1 and raw[:, 4].max() > 0.5
    assert raw[:, :2].min() < 0  # cell offsets, not pixel centres
    assert np.abs(raw[:, 2:4]).max() < 10  # log sizes in stride units, not pixel sizes


# ---------------------------------------------------------------- the real YOLOX-nano on real footage

def _check_person_boxes(det: Detections, frame: np.ndarray) -> None:
    h, w = frame.shape[:2]
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
    assert np.all(det.confidence >= 0.5)
    assert np.all(det.xyxy >= 0) and np.all(det.xyxy[:, [0, 2]] <= w) and np.all(det.xyxy[:, [1, 3]] <= h)
    bw, bh = det.xyxy[:, 2] - det.xyxy[:, 0], det.xyxy[:, 3] - det.xyxy[:, 1]
    assert np.all(bw > 0) and np.all(bh > bw)  # walking people are taller than wide


def test_plaza_has_four_people(yolox: YoloxOnnxDetector, shared: Path):
    frames = sample_frames(shared / "fixtures/videos/plaza_gallery_boxed.mp4", 10)
    counts = []
    for frame in frames:
        det = yolox(frame)
        _check_person_boxes(det, frame)
        counts.append(len(det))
    assert len(frames) >= 20
    assert np.mean(np.array(counts) == 4) >= 0.7, counts


def test_demo1_has_at_most_one_person(yolox: YoloxOnnxDetector, shared: Path):
    frames = sample_frames(shared / "fixtures/videos/demo1.mp4", 10)
    counts = []
    for frame in frames:
        det = yolox(frame)
        _check_person_boxes(det, frame)
        counts.append(len(det))
    assert max(counts) == 1 and sum(counts) >= len(frames) // 2, counts


def test_demo5_people_are_found_only_upright(yolox: YoloxOnnxDetector, shared: Path):
    """demo5 is stored turned 90° counter-clockwise: nobody is found until it is turned clockwise."""
    frames = sample_frames(shared / "fixtures/videos/demo5.mp4", 40)
    upright_counts = []
    for frame in frames:
        assert len(yolox(frame)) == 0
        upright = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
        det = yolox(upright)
        _check_person_boxes(det, upright)
        upright_counts.append(len(det))
    assert np.mean(np.array(upright_counts) >= 1) >= 0.8, upright_counts


# ---------------------------------------------------------------- ultralytics plumbing (no weights, no network)

def test_ultralytics_yaml_model_gives_frame_coordinates(shared: Path):
    """Built from ultralytics' own yolov8n.yaml, so the weights are random: only the plumbing is checked (person
    class only, boxes mapped back from the 640 network input to the 720x1280 frame, clipped, typed)."""
    import torch

    torch.manual_seed(0)
    frame = sample_frames(shared / "fixtures/videos/demo5.mp4", 1, limit=1)[0]  # 720 x 1280, not square
    h, w = frame.shape[:2]
    config = DetectConfig(score_threshold=1e-6, min_box_height=20)
    detector = build_detector("yolov8n.yaml", config, "cpu")
    assert isinstance(detector, UltralyticsDetector) and detector.name == "ultralytics" and detector.path is None
    det = detector(frame)
    assert isinstance(det, Detections) and len(det) > 0
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
    assert np.all(det.confidence >= 1e-6)
    assert np.all(det.xyxy >= 0) and np.all(det.xyxy[:, [0, 2]] <= w) and np.all(det.xyxy[:, [1, 3]] <= h)
    assert np.all(det.xyxy[:, 2] > det.xyxy[:, 0]) and np.all(det.xyxy[:, 3] - det.xyxy[:, 1] >= 20)
    assert det.xyxy[:, 2].max() > 700  # beyond the 640 network input: in frame pixels, not network pixels


@pytest.mark.parametrize("spec, backend", [
    ("yolo11n.pt", "ultralytics"), ("yolov8s.pt", "ultralytics"), ("yolo11n", "ultralytics"),
    ("YOLO26n-seg", "ultralytics"), ("models/custom.pt", "ultralytics"), ("yolov8n.yaml", "ultralytics"),
    ("cfg/my.yml", "ultralytics"), ("weights/yolox_nano.onnx", "yolox-onnx"), ("X.ONNX", "yolox-onnx"),
])
def test_routing_by_name(spec: str, backend: str):
    assert backend_for(spec) == backend  # decided from the name alone: nothing is loaded or downloaded
    assert backend in BACKENDS


def test_ultralytics_offline_name_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ultralytics.utils import SETTINGS

    name = "yolov8x-oiv7.pt"  # an official name, large and rarely cached
    if (Path(SETTINGS["weights_dir"]) / name).is_file():
        pytest.skip(f"{name} is cached on this machine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"{name}.*offline.*place") as err:
        build_detector(name, DetectConfig(), "cpu")
    assert "\n" not in str(err.value)
    assert not (tmp_path / name).exists()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("spec", ["foo.txt", "banana", "weights/yolo11n", "model.pth", "yolox_nano"])
def test_unknown_spec(spec: str):
    with pytest.raises(UserError, match=f"^{spec}: unknown detector model"):
        build_detector(spec, DetectConfig(), "cpu")


def test_missing_onnx(tmp_path: Path):
    path = tmp_path / "nothere.onnx"
    with pytest.raises(UserError, match="nothere.onnx: .*not found"):
        build_detector(str(path), DetectConfig(), "cpu")


def test_truncated_onnx(tmp_path: Path, shared: Path):
    data = (shared / YOLOX).read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="truncated.onnx: cannot load ONNX model") as err:
        build_detector(str(path), DetectConfig(), "cpu")
    assert "\n" not in str(err.value)


def test_onnx_that_is_not_yolox(tmp_path: Path, shared: Path):
    """A real ONNX model of another kind (the PP-HumanSeg segmenter: dynamic input, [n, 2, h, w] output)."""
    path = tmp_path / "seg.onnx"
    shutil.copy(shared / "weights/pphumanseg_onnx_model.onnx", path)
    with pytest.raises(UserError, match="seg.onnx: YOLOX model input must have a fixed size"):
        build_detector(str(path), DetectConfig(), "cpu")


@pytest.mark.parametrize("inp, out, message", [
    ([1, 3, 416, 416], [1, 3549, 85], None),
    ([1, 3, 416, 640], [1, 5460, 85], None),  # 52*80 + 26*40 + 13*20 anchors
    (["batch", 3, 416, 416], ["batch", "anchors", 6], None),  # 1 class, symbolic dims
    ([1, 1, 416, 416], [1, 3549, 85], "one image"),
    ([2, 3, 416, 416], [1, 3549, 85], "one image"),
    ([1, 3, 416, 420], [1, 3549, 85], "multiple of 32"),
    ([1, 3, 416, 416], [1, 1000, 85], "raw YOLOX head"),
    ([1, 3, 416, 416], [1, 3549, 5], "raw YOLOX head"),
    ([1, 3, 416, 416], [1, 3549, 85, 1], "raw YOLOX head"),
    ([1, 3, 416, 416], [1, 2, 416, 416], "raw YOLOX head"),
])
def test_yolox_io_check(inp: list, out: list, message: str | None):
    if message is None:
        assert check_yolox_io(inp, out, "m.onnx") == (inp[2], inp[3])
    else:
        with pytest.raises(UserError, match=f"^m.onnx: .*{message}"):
            check_yolox_io(inp, out, "m.onnx")


def test_ultralytics_missing_file(tmp_path: Path):
    for spec in (str(tmp_path / "mine.pt"), "yolo_made_up_name.pt"):  # neither may reach the network
        with pytest.raises(UserError, match="not found"):
            build_detector(spec, DetectConfig(), "cpu")


def test_ultralytics_corrupt_checkpoint(tmp_path: Path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(UserError, match="broken.pt: cannot load") as err:
        build_detector(str(path), DetectConfig(), "cpu")
    assert "\n" not in str(err.value)


def test_ultralytics_model_without_boxes(tmp_path: Path):
    with pytest.raises(UserError, match="yolov8n-cls.yaml: .*task is 'classify'"):
        build_detector("yolov8n-cls.yaml", DetectConfig(), "cpu")  # an image classifier (random weights)
    with pytest.raises(UserError, match="nothere.yaml: .*not found"):
        build_detector(str(tmp_path / "nothere.yaml"), DetectConfig(), "cpu")
