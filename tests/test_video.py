from __future__ import annotations

import numpy as np
import pytest

from allinone.errors import UserError
from allinone.video import VideoSink, VideoSource, read_frame_count
from tests.helpers import write_video


def test_real_video_opens_and_streams_every_frame(shared):
    path = shared / "fixtures/videos/demo1.mp4"
    src = VideoSource(path)
    assert (src.width, src.height) == (720, 1280)
    assert 29.0 < src.fps < 31.0
    n = 0
    for frame in src.frames():
        assert frame.shape == (1280, 720, 3) and frame.dtype == np.uint8
        n += 1
    assert n == src.count == 118  # the shared README: 118 frames


def test_stream_can_be_abandoned_early_and_restarted(shared):
    src = VideoSource(shared / "fixtures/videos/demo2.mp4")
    first = []
    for i, frame in enumerate(src.frames(prefetch=2)):
        first.append(frame)
        if i == 4:
            break
    again = next(iter(src.frames()))
    np.testing.assert_array_equal(again, first[0])


def test_synthetic_video_counts(tmp_path):
    path = write_video(tmp_path / "v.mp4", 17)
    src = VideoSource(path)
    assert sum(1 for _ in src.frames()) == 17 == read_frame_count(path)


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 100])
def test_unreadable_video_is_a_user_error(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="bad.mp4"):
        VideoSource(bad)


def test_missing_video_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        VideoSource(tmp_path / "nope.mp4")


def test_sink_writes_through_a_temporary_name(tmp_path):
    out = tmp_path / "out.mp4"
    sink = VideoSink(out, 25.0, (64, 48))
    for i in range(9):
        sink.write(np.full((48, 64, 3), i * 20, np.uint8))
    assert not out.exists()  # only the partial file exists while writing
    sink.close()
    assert out.exists() and read_frame_count(out) == 9
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_sink_discarded_on_error_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoSink(out, 25.0, (64, 48)) as sink:
            sink.write(np.zeros((48, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_sink_refuses_wrong_frame_size(tmp_path):
    sink = VideoSink(tmp_path / "o.mp4", 25.0, (64, 48))
    with pytest.raises(ValueError):
        sink.write(np.zeros((10, 10, 3), np.uint8))
    sink.discard()
