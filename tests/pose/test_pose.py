"""The pose stage: the Keypoints record, crops and the way back to frame pixels, MoveNet on a real person, and the
ONNX backend's three output forms."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from allinone.config import DetectConfig
from allinone.detect import build_detector
from allinone.errors import UserError
from allinone.pose import PoseEstimator, build_pose, check_pose_file, crop_people, crop_windows, to_frame
from allinone.pose.onnx import decode_heatmaps, decode_simcc
from allinone.records import Keypoints


def test_keypoints_record_checks_its_shapes():
    kp = Keypoints(3, [4, 5], np.zeros((2, 17, 2)), np.ones((2, 17)))
    assert kp.xy.dtype == np.float32 and kp.frames.dtype == np.int64 and len(kp) == 2
    assert kp.stacked().shape == (2, 17, 3) and (kp.stacked()[..., 2] == 1).all()
    with pytest.raises(ValueError, match="xy"):
        Keypoints(3, [4, 5], np.zeros((2, 16, 2)), np.ones((2, 17)))
    with pytest.raises(ValueError, match="confidence"):
        Keypoints(3, [4, 5], np.zeros((2, 17, 2)), np.ones((2, 16)))
    with pytest.raises(ValueError, match="increase"):
        Keypoints(3, [5, 4], np.zeros((2, 17, 2)), np.ones((2, 17)))


def test_crop_window_and_back_by_hand():
    # box 100 wide, 200 high; crops 192 x 192, grown 1.25: window 250 x 250 centred on (150, 300)
    (x0, y0, s), = crop_windows(np.array([[100, 200, 200, 400]]), (192, 192), 1.25)
    assert (x0, y0, s) == pytest.approx((25.0, 175.0, 250 / 192))
    frame = np.zeros((600, 400, 3), np.uint8)
    frame[300, 150] = 255  # the box centre
    crops, win = crop_people(frame, np.array([[100, 200, 200, 400]], np.float32), (192, 192), 1.25)
    y, x = np.unravel_index(crops[0, ..., 0].argmax(), crops.shape[1:3])
    back = to_frame(np.array([[[x, y]]], np.float32), win)[0, 0]
    assert np.abs(back - [150, 300]).max() <= s  # within one crop pixel


@pytest.fixture(scope="module")
def person(shared):
    """Frame 60 of demo1 and the walker's YOLOX box."""
    cap = cv2.VideoCapture(str(shared / "fixtures/videos/demo1.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 60)
    ok, frame = cap.read()
    assert ok
    dets = build_detector(str(shared / "weights/yolox_nano.onnx"), DetectConfig(), "cpu")(frame)
    return frame, dets.xyxy[dets.confidence.argmax()][None]


def test_movenet_finds_a_standing_body_inside_the_box(shared, person):
    frame, box = person
    stage = PoseEstimator(build_pose(shared / "weights/movenet_singlepose_lightning_int8.tflite"))
    xy, conf = stage(frame, box)
    assert xy.shape == (1, 17, 2) and conf.shape == (1, 17)
    x1, y1, x2, y2 = box[0]
    h = y2 - y1
    inside = (xy[0, :, 0] > x1 - 0.1 * h) & (xy[0, :, 0] < x2 + 0.1 * h) & (xy[0, :, 1] > y1 - 0.05 * h) \
        & (xy[0, :, 1] < y2 + 0.05 * h)
    assert inside.all()
    y = xy[0, :, 1]
    # upright: head above shoulders above hips above knees above ankles (COCO order; left/right averaged)
    levels = [y[0], y[5:7].mean(), y[11:13].mean(), y[13:15].mean(), y[15:17].mean()]
    assert all(a < b for a, b in zip(levels, levels[1:]))
    assert levels[-1] - levels[0] > 0.6 * h
    assert (conf > 0.2).mean() > 0.8


def _heatmap_onnx(path, peaks):
    """An ONNX graph [N, 3, 256, 192] → heatmaps [N, 17, 64, 48], zero but for a peak of 0.9 per joint at ``peaks``
    (AveragePool 4, a zero 1x1 conv to 17 channels, plus the constant maps)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hm = np.zeros((1, 17, 64, 48), np.float32)
    for j, (px, py) in enumerate(peaks):
        hm[0, j, py, px] = 0.9
        hm[0, j, py, px + 1] = 0.5  # right neighbour higher than left: +1/4 pixel in x
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["p", "w", "b"], ["z"]),
             helper.make_node("Add", ["z", "hm"], ["heatmaps"])]
    inits = [numpy_helper.from_array(np.zeros((17, 3, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.zeros(17, np.float32), "b"), numpy_helper.from_array(hm, "hm")]
    graph = helper.make_graph(nodes, "hm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 256, 192])],
                              [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 17, 64, 48])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every ONNX Runtime of requirements.txt reads
    onnx.save(model, str(path))
    return path


def test_onnx_heatmap_model_batched_and_mapped_to_the_frame(tmp_path, person):
    peaks = [(10 + j, 5 + 3 * j) for j in range(17)]
    model = build_pose(_heatmap_onnx(tmp_path / "hm.onnx", peaks))
    assert model.input_size == (256, 192)
    frame, box = person
    boxes = np.concatenate([box, box + 30])
    stage = PoseEstimator(model)
    xy, conf = stage(frame, boxes)
    crops, win = stage.crops(frame, boxes)
    for i in range(2):
        for j, (px, py) in enumerate(peaks):
            expect = np.array([(px + 0.25) * 4, py * 4]) * win[i, 2] + win[i, :2]
            assert np.abs(xy[i, j] - expect).max() < 1e-3
    assert np.allclose(conf, 0.9)


def test_simcc_and_heatmap_decoding_by_hand():
    sx = np.zeros((1, 17, 384), np.float32)
    sy = np.zeros((1, 17, 512), np.float32)
    sx[0, :, 100], sy[0, :, 300] = 0.8, 0.6
    out = decode_simcc(sx, sy, (256, 192))  # split ratio 2: x 50, y 150, score min(0.8, 0.6)
    assert out[0, 0].tolist() == pytest.approx([50.0, 150.0, 0.6])
    hm = np.zeros((1, 17, 64, 48), np.float32)
    hm[0, :, 0, 47] = 2.0  # at the corner: no quarter-pixel shift; the score is clipped to 1
    assert decode_heatmaps(hm, (256, 192))[0, 0].tolist() == pytest.approx([47 * 4, 0.0, 1.0])


@pytest.mark.parametrize("name,msg", [("missing.tflite", "not found"), ("model.bin", "unknown pose model type")])
def test_pose_file_mistakes_are_user_errors(tmp_path, name, msg):
    if name.endswith(".bin"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(UserError, match=msg):
        check_pose_file(tmp_path / name)
    with pytest.raises(UserError, match="directory"):
        check_pose_file(tmp_path)
