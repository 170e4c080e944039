"""argparse pieces shared by the commands: value types (each a one-line error in argparse's usual form), the model
flags and the RunConfig they make."""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from allinone.config import (DetectConfig, GaitConfig, LiveConfig, MatchConfig, OutputsConfig, PoseConfig, RunConfig,
                             SegmentConfig, TrackConfig)
from allinone.errors import UserError
from allinone.gait.registry import ARCHS

GAIT_ARCHS = tuple(ARCHS)


class Parser(argparse.ArgumentParser):
    """argparse's parser whose mistakes end in one line (``error: ... (see ... --help)``, exit 2) instead of the
    usage block: --help holds the rest."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def int_in_range(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high] (no upper bound when high is None)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < low or (high is not None and v > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {v}")
        return v
    return parse


positive_int = int_in_range(1)


def add_window_arg(p: argparse.ArgumentParser) -> None:
    """--window-min, for the commands that decide live streams (the main command and watch)."""
    lc = LiveConfig()
    p.add_argument("--window-min", type=int_in_range(1, lc.window), default=lc.window_min, metavar="N",
                   help=f"live stream: a track's first decision once it has N silhouettes (default {lc.window_min}; "
                        f"fewer decide sooner, on less of the walk; at most the window, {lc.window})")


def unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {v}")
    return v


def nonnegative_float(text: str, what: str = "a number") -> float:
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected {what} (finite, >= 0), got {text!r}")
    return v


def _segment(seconds: float) -> float:
    if not seconds > 0:
        raise UserError(f"--segment must be more than 0 seconds, got {seconds:g}")
    return seconds


def threshold_arg(text: str) -> float | None:
    """argparse type for --threshold: 'auto' (None) or a finite distance >= 0 (the metric's range is checked once
    the metric is known)."""
    if text.strip().lower() == "auto":
        return None
    return nonnegative_float(text, "auto or a distance")


def fpir_arg(text: str) -> float:
    """argparse type for --target-fpir: a rate strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1 (exclusive), got {text!r}")
    return v


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose and tune the models (shared by the main command and enroll)."""
    d, s, m = DetectConfig(), SegmentConfig(), MatchConfig()
    p.add_argument("--detector", default="", metavar="PATH|NAME",
                   help="a YOLOX .onnx file, or an ultralytics .pt file or name such as yolo11n.pt "
                        "(default: yolo11n.pt from the checkpoints folder)")
    p.add_argument("--seg-model", default="", metavar="PATH",
                   help="PP-HumanSeg: a PaddleSeg inference folder (deploy.yaml) or an .onnx file "
                        "(default: PP-HumanSeg v2 mobile from the checkpoints folder)")
    p.add_argument("--gait-model", default="", metavar="PATH",
                   help="an OpenGait checkpoint (.pt: GaitBase, GaitSet, GaitPart, GaitGL, DeepGaitV2), GaitGraph's "
                        "released .pth (keypoints: needs a pose model), or an .onnx file from export-onnx "
                        "(default: GREW GaitBase from the checkpoints folder)")
    p.add_argument("--pose-model", default="", metavar="PATH",
                   help="2-D keypoints of each tracked person: a MoveNet .tflite or a top-down keypoint .onnx "
                        "(needed by keypoint gait models such as GaitGraph; default for those: RTMPose-m from the "
                        "checkpoints folder)")
    p.add_argument("--save-keypoints", action="store_true",
                   help="keep each track's keypoints as OpenGait's pose pickle (keypoints/<video>/<track>.pkl, "
                        "float32 [T, 17, 3]: x, y in frame pixels, confidence)")
    p.add_argument("--gait-arch", default="auto", choices=["auto", *GAIT_ARCHS], metavar="NAME",
                   help="the gait model's OpenGait architecture: " + ", ".join(GAIT_ARCHS) + ", or auto "
                        "(default): recognised from the checkpoint's keys; naming one refuses any other")
    p.add_argument("--embedding", choices=["auto", "embed_1", "embed_2"], default="auto",
                   help="the gait embedding: embed_1 (FCs output), embed_2 (BNNeck output, DeepGaitV2), or auto "
                        "(default): what OpenGait's released config for the checkpoint sets (use_emb2)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="also load gait checkpoints that pickle objects besides tensors (this can run code from "
                        "the file: only for files you trust)")
    p.add_argument("--checkpoints", default=None, type=Path, metavar="DIR",
                   help="folder of the default weights (default: $ALLINONE_CHECKPOINTS, else checkpoints/)")
    p.add_argument("--no-download", action="store_true",
                   help="never download missing default weights; list what to place where instead")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the models run (default: auto = cuda when available)")
    p.add_argument("--frame-step", type=positive_int, default=s.frame_step, metavar="N",
                   help=f"segment every N-th frame of a track (default: {s.frame_step})")
    p.add_argument("--det-score", type=unit_float, default=d.score_threshold, metavar="S",
                   help=f"lowest detection score passed to the tracker (default: {d.score_threshold})")
    p.add_argument("--det-batch", type=int_in_range(0), default=d.batch, metavar="N",
                   help="frames detected together (then tracked in order); 0 (default): 8 on CUDA, 1 on the CPU")
    p.add_argument("--rotate", choices=["auto", "0", "90", "180", "270"], default="auto",
                   help="turn video frames clockwise; auto (default): the file's rotation tag, else a quarter turn "
                        "where nobody is found upright (with a warning)")
    p.add_argument("--min-frames", type=positive_int, default=m.min_frames, metavar="N",
                   help=f"tracks with fewer silhouettes are too_short (default: {m.min_frames})")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")


def _default(cls, name: str):
    """A config dataclass field's default: a flag some commands lack takes it from the one place it is set."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def config_from_args(a: argparse.Namespace) -> RunConfig:
    """The main command's spec: its inputs and every model flag."""
    from allinone.io.video import is_stream
    return spec_from_args(a, gallery=a.gallery, probes=tuple(p if is_stream(p) else Path(p) for p in a.probe),
                          output=a.output, name=a.name, gallery_db=getattr(a, "gallery_db", None))


def spec_from_args(a: argparse.Namespace, *, gallery, probes: tuple = (), output: Path, name: str | None = None,
                   gallery_db=None) -> RunConfig:
    """A run's spec from a command's model flags (add_model_args, and the optional ones a command has) and the
    inputs the command names itself: enrol, compare and extract run the pipeline on their own inputs."""
    def opt(flag: str, cls, field: str):
        return getattr(a, flag, _default(cls, field))
    return RunConfig(
        gallery=gallery, probes=tuple(probes), output=output, name=name, device=a.device, quiet=a.quiet,
        track_only=opt("track_only", RunConfig, "track_only"), checkpoints=a.checkpoints, download=not a.no_download,
        save_silhouettes=opt("save_silhouettes", RunConfig, "save_silhouettes"),
        gallery_db=gallery_db,
        rotate=a.rotate,
        detect=DetectConfig(model=str(a.detector), score_threshold=a.det_score, batch=a.det_batch),
        track=TrackConfig(),
        segment=SegmentConfig(model=str(a.seg_model) if a.seg_model else "", frame_step=a.frame_step),
        pose=PoseConfig(model=str(getattr(a, "pose_model", "") or ""), save=opt("save_keypoints", PoseConfig, "save")),
        gait=GaitConfig(model=str(a.gait_model) if a.gait_model else "", arch=a.gait_arch,
                        trust_checkpoint=a.trust_checkpoint, embedding=opt("embedding", GaitConfig, "embedding")),
        match=MatchConfig(metric=opt("metric", MatchConfig, "metric"),
                          threshold=opt("threshold", MatchConfig, "threshold"),
                          min_frames=a.min_frames, calibration=opt("calibration", MatchConfig, "calibration"),
                          target_fpir=opt("target_fpir", MatchConfig, "target_fpir")),
        identities=tuple(getattr(a, "identity", ())),
        live=LiveConfig(duration_s=opt("duration", LiveConfig, "duration_s"),
                        reconnect_s=opt("reconnect", LiveConfig, "reconnect_s"),
                        window_min=opt("window_min", LiveConfig, "window_min"),
                        segment_s=_segment(opt("segment", LiveConfig, "segment_s"))),
        outputs=_outputs(a),
    )


def _outputs(a: argparse.Namespace) -> OutputsConfig:
    """--mqtt and --webhook, their addresses checked here: a bad one is one line before any model loads."""
    from allinone.sinks.outputs import check_outputs
    outputs = OutputsConfig(mqtt=getattr(a, "mqtt", "") or "", webhooks=tuple(getattr(a, "webhook", ()) or ()))
    check_outputs(outputs)
    return outputs
