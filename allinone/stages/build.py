"""The models of a run, found (defaults from the checkpoints folder) and built once: Stages."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from allinone.config import RunConfig
from allinone.decide.match import Matcher
from allinone.decide.threshold import check_threshold
from allinone.detect import Detector
from allinone.errors import UserError
from allinone.io.input_models import InputModel, InputModels
from allinone.io.run_folder import sha256_path
from allinone.gait import GaitBackend
from allinone.pose import PoseEstimator
from allinone.segment import Segmenter

log = logging.getLogger(__name__)


@dataclass
class Stages:
    """The models of a run, built once."""

    detector: Detector
    segmenter: Segmenter | None = None
    embedder: GaitBackend | None = None
    matcher: Matcher | None = None
    pose: PoseEstimator | None = None  # keypoints of each tracked person (pose/), when a model reads them or asked


def needs_keypoints(config: RunConfig) -> bool:
    """Whether the run's gait model reads keypoints (GaitGraph; SkeletonGait++ beside silhouettes), told from the
    checkpoint's key names without unpickling it (cheap: before any model loads). The default gait model does not."""
    if config.track_only or not config.gait.model:
        return False
    from allinone.gait.backends import reads_keypoints
    return reads_keypoints(config.gait.model)


def uses_silhouettes(config: RunConfig) -> bool:
    """Whether the run cuts silhouettes: every gait model but the keypoint-only ones (GaitGraph)."""
    if config.track_only:
        return False
    if not config.gait.model:
        return True
    from allinone.gait.backends import reads_silhouettes
    return reads_silhouettes(config.gait.model)


def check_models_given(config: RunConfig) -> None:
    """Cheap checks of the model paths the user named, before anything loads."""
    if config.gait.model and not config.track_only:
        from allinone.gait.backends import check_model_file
        check_model_file(config.gait.model)
    seg = config.segment.model
    if seg and uses_silhouettes(config) and not Path(seg).exists():
        raise UserError("segmentation model not found", seg)
    if config.pose.model and not config.track_only:
        from allinone.pose import check_pose_file
        check_pose_file(config.pose.model)
    elif not config.download and needs_keypoints(config):
        from allinone.io import weights
        spec = next(s for s in weights.optional_models() if s.key == "pose")
        if not spec.path(weights.checkpoints_dir(config.checkpoints)).exists():
            raise UserError("this gait model reads keypoints: give a pose model with --pose-model PATH (a MoveNet "
                            ".tflite or a keypoint .onnx), or allow the download of the default one",
                            config.gait.model)


def resolve_models(config: RunConfig, gait: bool = True) -> RunConfig:
    """Fill in the default models the user did not name, from the checkpoints folder (downloading what is
    missing, unless downloads are off). Every missing file is reported in one message. ``gait`` False: no gait
    model is needed (extract)."""
    from allinone.io import weights
    want: list[str] = []
    if not config.detect.model:
        want.append("detector")
    if not config.track_only:
        if not config.segment.model and uses_silhouettes(config):
            want.append("seg")
        if not config.gait.model and gait:
            want.append("gait")
        if not config.pose.model and needs_keypoints(config):
            want.append("pose")
    if not want:
        return config
    device = "cpu"  # the load checks below only prove that a fresh download loads
    checks = {
        "detector": lambda p: build_detector(str(p), config, device),
        "seg": lambda p: build_segmenter(str(p), device),
        "gait": lambda p: load_gait(str(p), config, device),
        "pose": lambda p: build_pose_stage(str(p), config, device),
    }
    paths = weights.resolve_all(want, weights.checkpoints_dir(config.checkpoints), download=config.download,
                                progress=not config.quiet, checks={k: checks[k] for k in want})
    return replace(
        config,
        detect=replace(config.detect, model=str(paths.get("detector", config.detect.model))),
        segment=replace(config.segment, model=str(paths.get("seg", config.segment.model))),
        gait=replace(config.gait, model=str(paths.get("gait", config.gait.model))),
        pose=replace(config.pose, model=str(paths.get("pose", config.pose.model))),
    )


def build_detector(model: str, config: RunConfig, device: str) -> Detector:
    from allinone.detect import build_detector as build
    return build(model, config.detect, device)


def build_segmenter(model: str, device: str) -> Segmenter:
    from allinone.segment import build_segmenter as build
    return build(model, device)


def build_pose_stage(model: str, config: RunConfig, device: str) -> PoseEstimator:
    from allinone.pose import build_pose
    return PoseEstimator(build_pose(model, device), config.pose.box_scale)


def skeleton_channels(embedder) -> bool:
    """Whether the gait model takes skeleton maps beside each silhouette (SkeletonGait++: 3 planes a frame)."""
    return getattr(getattr(embedder, "spec", None), "channels", 1) > 1


def load_gait(model: str, config: RunConfig, device: str) -> GaitBackend:
    """The gait backend for the model file: torch for OpenGait .pt checkpoints, ONNX Runtime for .onnx."""
    from allinone.gait.backends import embedder_for
    return embedder_for(model, config.gait, device)


def build_stages(config: RunConfig, device: str) -> tuple[Stages, RunConfig]:
    """The stages, built once, and the config with what loading them settled (the 'auto' metric)."""
    detector = build_detector(config.detect.model, config, device)
    if config.track_only:
        return Stages(detector), config
    segmenter = build_segmenter(config.segment.model, device) if uses_silhouettes(config) else None
    embedder = load_gait(config.gait.model, config, device)
    pose = build_pose_stage(config.pose.model, config, device) if config.pose.model else None
    if (getattr(embedder, "input", "silhouettes") == "keypoints" or skeleton_channels(embedder)) and pose is None:
        raise UserError(f"{config.gait.model}: {getattr(embedder, 'arch', 'this gait model')} reads keypoints: "
                        "give a pose model (--pose-model)")
    if config.match.metric == "auto":
        config = replace(config, match=replace(config.match, metric=embedder.metric))
    elif config.match.metric != embedder.metric:
        log.warning("matching with %s distances; %s (%s) is evaluated with %s in OpenGait", config.match.metric,
                    getattr(embedder, "arch", "the gait model"), config.gait.model, embedder.metric)
    if config.match.threshold is not None:
        check_threshold(config.match.threshold, config.match.metric)
    return Stages(detector, segmenter, embedder, Matcher(config.match), pose), config


def _input_model(path: str | None, used: bool) -> InputModel:
    if not used:
        return InputModel("", "")
    if not path or not Path(path).exists():
        return InputModel(path or "")
    return InputModel(str(path), sha256_path(path))


def input_models(config: RunConfig) -> InputModels:
    """The input models of a run (RunConfig, models resolved): the segmenter where the gait model cuts
    silhouettes, the pose model where it reads keypoints."""
    return InputModels(_input_model(config.segment.model, uses_silhouettes(config)),
                       _input_model(config.pose.model, needs_keypoints(config)))
