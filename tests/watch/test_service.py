"""The watch service's per-camera settings on real frames and a real stream: regions to ignore (the real YOLOX on
a frame of the walking video) and a camera turned on its side (an ffmpeg stream on the loopback)."""
from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
import pytest

from allinone.config import DetectConfig, TrackConfig
from allinone.detect import YoloxOnnxDetector
from allinone.stages.build import Stages
from allinone.stages.step import FrameStep
from allinone.stages.track import ByteTracker
from allinone.watch.config import CameraConfig, WatchConfig
from allinone.watch.service import _ignores
from tests.helpers import looped_ts_server


class _NoMot:
    def write(self, *a) -> None:
        pass


def _frame(shared, n: int = 60) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared / "fixtures/videos/demo4.mp4"))
    for _ in range(n):
        ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def _tracked(stages: Stages, frame: np.ndarray, ignore=None) -> int:
    step = FrameStep(stages, ByteTracker(TrackConfig(), 25.0), _NoMot(), defaultdict(float), ignore=ignore)
    for i in range(3):  # a track is confirmed over a few frames
        _, tracked = step(frame.copy(), i)
    return len(tracked.track_id)


def test_a_person_whose_feet_are_in_a_region_to_ignore_is_not_tracked(shared, tmp_path):
    stages = Stages(YoloxOnnxDetector(shared / "weights/yolox_nano.onnx", DetectConfig(), "cpu"))
    frame = _frame(shared)
    dets = stages.detector(frame)
    assert len(dets.xyxy) >= 1
    x1, y1, x2, y2 = (float(v) for v in dets.xyxy[0])
    feet = ((x1 + x2) / 2, y2)
    around = ((feet[0] - 20, feet[1] - 20), (feet[0] + 20, feet[1] - 20), (feet[0] + 20, feet[1] + 20),
              (feet[0] - 20, feet[1] + 20))
    elsewhere = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    base = dict(gallery=tmp_path / "g.db", output=tmp_path / "out")
    cams = (CameraConfig("hall", "rtsp://127.0.0.1:1/h", ignore=(around,)),
            CameraConfig("yard", "rtsp://127.0.0.1:1/y", ignore=(elsewhere,)),
            CameraConfig("gate", "rtsp://127.0.0.1:1/g"))
    masks = _ignores(WatchConfig(cameras=cams, **base))
    assert set(masks) == {"hall", "yard"}  # a camera without regions filters nothing
    assert _tracked(stages, frame) >= 1
    assert _tracked(stages, frame, masks["yard"]) == _tracked(stages, frame)
    assert _tracked(stages, frame, masks["hall"]) == _tracked(stages, frame) - 1


def test_a_stream_turned_on_its_side_gives_upright_frames(shared):
    from allinone.io.video import StreamSource
    if not __import__("shutil").which("ffmpeg"):
        pytest.skip("ffmpeg missing here (.ci/run installs it)")
    with looped_ts_server(shared / "fixtures/videos/demo4.mp4") as url:
        src = StreamSource(url, 2.0)
        h, w = src.height, src.width
        src.set_rotation(90)
        assert (src.height, src.width) == (w, h)
        frame, _ = next(src.frames())
        src.stop()
    assert frame.shape[:2] == (w, h)
    with pytest.raises(ValueError):
        src.set_rotation(45)
