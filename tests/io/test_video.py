from __future__ import annotations

import numpy as np
import pytest

from allinone.errors import UserError
from allinone.io.video import VideoSink, VideoSource, read_frame_count
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


def _top_level_boxes(path) -> list[str]:
    """The MP4's top-level box types in file order (ISO BMFF: 4-byte size, 4-byte type)."""
    import struct
    data = open(path, "rb").read()
    out, i = [], 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8:i + 16])[0]
        out.append(kind.decode("latin-1"))
        if size < 8:
            break
        i += size
    return out


def test_sink_writes_browser_playable_h264(tmp_path):
    import av
    out = tmp_path / "odd.mp4"
    rng = np.random.default_rng(0)
    with VideoSink(out, 29.97, (65, 47)) as sink:  # odd sizes: padded to even for yuv420p
        for _ in range(31):
            sink.write(rng.integers(0, 255, (47, 65, 3), dtype=np.uint8))
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (v.width, v.height) == (66, 48)
        assert abs(float(v.average_rate) - 29.97) < 0.01
        assert sum(1 for _ in c.decode(video=0)) == 31
    boxes = _top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")  # +faststart: playable while it downloads
    assert read_frame_count(out) == 31


def test_encoder_is_checked_at_run_time_with_the_cpu_fallback(tmp_path):
    """NVENC is used only where it opens; on a machine without an NVIDIA GPU (as here) the sink falls back to
    libx264. An encoder this FFmpeg lacks never opens."""
    import av

    from allinone.io.encoders import encoder_opens, h264_encoder
    assert not encoder_opens("no_such_encoder")
    assert encoder_opens("libx264")
    expected = "h264_nvenc" if encoder_opens("h264_nvenc") else "libx264"
    sink = VideoSink(tmp_path / "a.mp4", 25.0, (64, 48))
    assert sink.encoder == h264_encoder("auto") == expected
    for _ in range(3):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_sink_colours_come_back_as_written(tmp_path):
    """The BGR → yuv420p conversion (OpenCV's, BT.601 limited range) matches what FFmpeg decodes with: flat colour
    patches read back within a few levels, and the whole picture above 35 dB PSNR."""
    import cv2
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (128, 128, 128), (255, 255, 255), (20, 40, 60),
               (200, 120, 30)]
    frame = np.zeros((96, 128, 3), np.uint8)
    for k, c in enumerate(colours):
        frame[(k // 4) * 48:(k // 4 + 1) * 48, (k % 4) * 32:(k % 4 + 1) * 32] = c
    with VideoSink(tmp_path / "c.mp4", 25.0, (128, 96)) as sink:
        for _ in range(5):
            sink.write(frame)
    cap = cv2.VideoCapture(str(tmp_path / "c.mp4"))
    ok, got = cap.read()
    cap.release()
    assert ok
    for k, c in enumerate(colours):
        patch = got[(k // 4) * 48 + 8:(k // 4 + 1) * 48 - 8, (k % 4) * 32 + 8:(k % 4 + 1) * 32 - 8]
        assert np.abs(patch.reshape(-1, 3).mean(axis=0) - np.array(c)).max() < 6, (c, patch.mean(axis=(0, 1)))
    mse = np.mean((got.astype(float) - frame.astype(float)) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 35
