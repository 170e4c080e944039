"""Every walker of the shared videos as keypoints: YOLOX-nano, ByteTrack and MoveNet (the run's own pose path), one
pass per video, shared by the real-recognition tests."""
from __future__ import annotations

from pathlib import Path

from allinone.config import DetectConfig, RunConfig
from allinone.detect import build_detector
from allinone.io.run_folder import RunWriter
from allinone.io.video import VideoSource
from allinone.pose import PoseEstimator, build_pose
from allinone.records import Keypoints, VideoInfo
from allinone.stages.build import Stages
from allinone.stages.rotation import choose_rotation
from allinone.stages.video_pass import process_video

VIDEOS = ("demo1", "demo2", "demo4", "demo5", "plaza_gallery_boxed")
MIN_POSES = 30  # a walker: a track with at least this many poses (1 s at 30 fps)


def walkers(shared: Path, out: Path) -> dict[tuple[str, int], Keypoints]:
    """(video, track id) → Keypoints for every track of the shared videos with at least MIN_POSES poses."""
    config = RunConfig(gallery=None, probes=(), quiet=True, render=False)
    detector = build_detector(str(shared / "weights/yolox_nano.onnx"), DetectConfig(), "cpu")
    pose = PoseEstimator(build_pose(shared / "weights/movenet_singlepose_lightning_int8.tflite"))
    stages = Stages(detector, pose=pose)
    found: dict[tuple[str, int], Keypoints] = {}
    with RunWriter(out, "walkers") as writer:
        for name in VIDEOS:
            src = VideoSource(shared / f"fixtures/videos/{name}.mp4")
            src.set_rotation(choose_rotation(src, detector, "auto")[0])
            info = VideoInfo(path=src.path, name=name, role="probe", frames=src.frame_count_hint, fps=src.fps,
                             width=src.width, height=src.height)
            result = process_video(src, info, config, stages, writer)
            for tid, tr in result.tracks.items():
                if tr.keypoints is not None and len(tr.keypoints) >= MIN_POSES:
                    found[(name, tid)] = tr.keypoints
    return found
