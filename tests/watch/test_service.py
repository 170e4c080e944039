"""The watch service's per-camera settings on real frames and a real stream: regions to ignore (the real YOLOX on
a frame of the walking video), a camera turned on its side (an ffmpeg stream on the loopback), and a video file
watched as a looped camera analysing every other frame."""
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


def test_a_video_file_is_a_camera_played_at_its_rate_looped_every_other_frame_kept(shared, tmp_path):
    """loop:PATH: the file's frames in order at its own frame rate, from its start again at its end; with step 2
    every other frame read is kept (the file's 0, 2, 4, ...) and the rate downstream is halved."""
    import time

    from allinone.io.video import open_stream
    clip = tmp_path / "ten.mp4"
    cap = cv2.VideoCapture(str(shared / "fixtures/videos/demo4.mp4"))
    first = [cap.read()[1] for _ in range(10)]
    cap.release()
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, first[0].shape[1::-1])
    for f in first:
        out.write(f)
    out.release()
    cap = cv2.VideoCapture(str(clip))  # the file as decoded: what the camera must give
    decoded = [cap.read()[1] for _ in range(10)]
    cap.release()

    src = open_stream(f"loop:{clip}", 2.0)
    src.set_step(2)
    assert (src.sent_fps, src.fps) == (20.0, 10.0)
    got, arrivals = [], []
    start = time.monotonic()
    for frame, at in src.frames(deadline=start + 1.6):  # 32 frames read at 20/s: 3 loops and more
        got.append(frame)
        arrivals.append(at)
    assert src.loops >= 2 and src.count == len(got) and src.skipped >= len(got) - 1
    for k, frame in enumerate(got):  # the read counter runs on across loops: 10 frames, so 0, 2, 4, 6, 8, 0, ...
        assert np.array_equal(frame, decoded[(2 * k) % 10]), k
    # paced at the file's rate (20 read/s, 10 kept/s), not as fast as it decodes (hundreds per second)
    assert 8 <= len(got) <= 17, len(got)
    assert np.median(np.diff(arrivals)) == pytest.approx(0.1, abs=0.03)
    with pytest.raises(ValueError):
        src.set_step(0)


def test_a_missing_file_camera_is_a_user_error(tmp_path):
    from allinone.errors import UserError
    from allinone.io.video import open_stream
    with pytest.raises(UserError, match="no such video file"):
        open_stream(f"loop:{tmp_path / 'gone.mp4'}")
