"""Memory follows the tracks, not the video's length: frames are streamed, never kept."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import torch

from allinone.config import DetectConfig, GaitConfig, MatchConfig, RunConfig, SegmentConfig
from allinone.gait.checkpoint import save_gaitbase_checkpoint
from allinone.gait.gaitbase import GaitBase
from allinone.runner.runner import run
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


def _looped(src: Path, out: Path, frames: int, times: int) -> Path:
    """The first ``frames`` frames of ``src`` played ``times`` times over with 40 empty frames between (longer than
    the tracker's 30-frame buffer): the same people walking by again and again, each time as new tracks."""
    cap = cv2.VideoCapture(str(src))
    clip = []
    while len(clip) < frames:
        ok, f = cap.read()
        if not ok:
            break
        clip.append(f)
    cap.release()
    vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, clip[0].shape[1::-1])
    for k in range(times):
        for f in ([np.zeros_like(clip[0])] * 40 if k else []) + clip:
            vw.write(f)
    vw.release()
    return out


def test_people_on_long_footage_take_constant_memory(tmp_path, shared):
    """Tracks are embedded and released as they end: six loops of the four plaza walkers (24 tracks) peak no higher
    than one loop, beyond a few small per-track records."""
    ckpt = tmp_path / "g.pt"
    torch.manual_seed(0)
    save_gaitbase_checkpoint(GaitBase(class_num=5), ckpt)
    plaza = shared / "fixtures/videos/plaza_gallery_boxed.mp4"
    short = _looped(plaza, tmp_path / "x1.mp4", 60, 1)
    long = _looped(plaza, tmp_path / "x6.mp4", 60, 6)

    def peak(video: Path, name: str) -> tuple[int, dict]:
        config = RunConfig(gallery=video, probes=(short,), output=tmp_path / "runs", name=name, quiet=True,
                           download=False, detect=DetectConfig(model=str(shared / "weights/yolox_nano.onnx")),
                           segment=SegmentConfig(model=str(shared / "weights/pphumanseg_onnx_model.onnx")),
                           gait=GaitConfig(model=str(ckpt)), match=MatchConfig(threshold=1.0))
        tracemalloc.start()
        try:
            result = run(config)
            return tracemalloc.get_traced_memory()[1], result.manifest
        finally:
            tracemalloc.stop()

    peak(short, "warm")
    p1, m1 = peak(short, "one")
    p6, m6 = peak(long, "six")
    tracks1, tracks6 = len(m1["videos"][0]["tracks"]), len(m6["videos"][0]["tracks"])
    assert tracks6 >= 4 * tracks1 >= 12, (tracks1, tracks6)  # the loops really made new tracks to embed
    assert sum(t["n_silhouettes"] for t in m6["videos"][0]["tracks"]) > 4 * 60  # and many silhouettes
    assert p6 <= 1.10 * p1, (p1, p6)
