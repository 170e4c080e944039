"""Memory follows the tracks, not the video's length: frames are streamed, never kept."""
from __future__ import annotations

import tracemalloc

from allinone.config import DetectConfig, RunConfig
from allinone.pipeline import run
from tests.helpers import write_video


def _peak_bytes(video, out, shared) -> int:
    config = RunConfig(gallery=video, probes=(video,), output=out, name="m", quiet=True, track_only=True,
                       download=False, detect=DetectConfig(model=str(shared / "weights/yolox_nano.onnx")))
    tracemalloc.start()  # numpy (and OpenCV's frames, which are numpy arrays) report to tracemalloc
    try:
        run(config)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_video_length(tmp_path, shared):
    size_wh = (640, 360)
    frame_bytes = size_wh[0] * size_wh[1] * 3
    short = write_video(tmp_path / "short.mp4", 40, size_wh=size_wh)
    long = write_video(tmp_path / "long.mp4", 320, size_wh=size_wh, seed=1)
    _peak_bytes(short, tmp_path / "warm", shared)  # first-use allocations (lazy imports, caches) out of the way
    p_short = _peak_bytes(short, tmp_path / "a", shared)
    p_long = _peak_bytes(long, tmp_path / "b", shared)
    # keeping the 280 extra frames would add ~190 MB; streaming adds nothing that grows with the length
    assert p_long - p_short < 4 * frame_bytes, (p_short, p_long)
    assert p_short > 2 * frame_bytes  # the measurement sees frames at all
