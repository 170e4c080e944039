"""Command line: arguments → RunConfig → pipeline.run(). A user's mistake becomes one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from .config import DetectConfig, GaitConfig, MatchConfig, RunConfig, SegmentConfig, TrackConfig
from .errors import UserError
from .gait.registry import ARCHS
from .identities import check_named, parse_identity

GAIT_ARCHS = tuple(ARCHS)

log = logging.getLogger("allinone")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


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


_positive_int = int_in_range(1)


def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {v}")
    return v


def threshold_arg(text: str) -> float | None:
    """argparse type for --threshold: 'auto' (None) or a finite distance >= 0 (the metric's range is checked once
    the metric is known)."""
    if text.strip().lower() == "auto":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a distance, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected auto or a finite distance >= 0, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    d, s, m = DetectConfig(), SegmentConfig(), MatchConfig()
    p = argparse.ArgumentParser(
        prog="python main.py",
        description="Find every walking person in a gallery video and one or more probe videos, follow them, "
                    "cut their silhouettes, embed their gait and tell which gallery person each probe person is.")
    p.add_argument("--gallery", required=True, type=Path, metavar="VIDEO", help="the gallery video (known people)")
    p.add_argument("--probe", required=True, action="append", type=Path, metavar="VIDEO",
                   help="a probe video (repeat for several)")
    p.add_argument("--output", type=Path, default=Path("output"), metavar="DIR",
                   help="folder that receives the run folder (default: output)")
    p.add_argument("--name", default=None, metavar="RUN", help="run folder name (default: a timestamp)")
    p.add_argument("--detector", default="", metavar="PATH|NAME",
                   help="a YOLOX .onnx file, or an ultralytics .pt file or name such as yolo11n.pt "
                        "(default: yolo11n.pt from the checkpoints folder)")
    p.add_argument("--seg-model", default="", metavar="PATH",
                   help="PP-HumanSeg: a PaddleSeg inference folder (deploy.yaml) or an .onnx file "
                        "(default: PP-HumanSeg v2 mobile from the checkpoints folder)")
    p.add_argument("--gait-model", default="", metavar="PATH",
                   help="an OpenGait checkpoint (.pt: GaitBase, GaitSet, GaitPart, GaitGL, DeepGaitV2) or an "
                        ".onnx file from export-onnx (default: GREW GaitBase from the checkpoints folder)")
    p.add_argument("--gait-arch", default="auto", choices=["auto", *GAIT_ARCHS], metavar="NAME",
                   help="the gait model's OpenGait architecture: " + ", ".join(GAIT_ARCHS) + ", or auto "
                        "(default): recognised from the checkpoint's keys; naming one refuses any other")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="also load gait checkpoints that pickle objects besides tensors (this can run code from "
                        "the file: only for files you trust)")
    p.add_argument("--checkpoints", default=None, type=Path, metavar="DIR",
                   help="folder of the default weights (default: $ALLINONE_CHECKPOINTS, else checkpoints/)")
    p.add_argument("--no-download", action="store_true",
                   help="never download missing default weights; list what to place where instead")
    p.add_argument("--track-only", action="store_true",
                   help="detect and track only (no silhouettes, embeddings or matching)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the models run (default: auto = cuda when available)")
    p.add_argument("--frame-step", type=_positive_int, default=s.frame_step, metavar="N",
                   help=f"segment every N-th frame of a track (default: {s.frame_step})")
    p.add_argument("--det-score", type=_unit_float, default=d.score_threshold, metavar="S",
                   help=f"lowest detection score passed to the tracker (default: {d.score_threshold})")
    p.add_argument("--metric", choices=["auto", "euc", "cos"], default=m.metric,
                   help="gait distance (default: auto, the one OpenGait evaluates the model with: euc)")
    p.add_argument("--threshold", type=threshold_arg, default=m.threshold, metavar="auto|D",
                   help="a probe person may only be matched to a gallery identity within this distance; auto "
                        "(default): from the distances of people seen together in the videos, else the metric's "
                        "uncalibrated default (run.json records which)")
    p.add_argument("--calibration", default="", metavar="FILE",
                   help="a calibration file from python main.py calibrate (default: <checkpoint stem>.calibration"
                        ".json beside the gait checkpoint, when there is one); --threshold D overrides it")
    p.add_argument("--identity", action="append", type=parse_identity, default=[], metavar="NAME=ID[,ID...]",
                   help="name a gallery person and give them one or more gallery track ids (repeat for several); "
                        "other gallery tracks are identities of their own, G<id>")
    p.add_argument("--min-frames", type=_positive_int, default=m.min_frames, metavar="N",
                   help=f"tracks with fewer silhouettes are too_short (default: {m.min_frames})")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    return p


def config_from_args(a: argparse.Namespace) -> RunConfig:
    return RunConfig(
        gallery=a.gallery, probes=tuple(a.probe), output=a.output, name=a.name, device=a.device, quiet=a.quiet,
        track_only=a.track_only, checkpoints=a.checkpoints, download=not a.no_download,
        detect=DetectConfig(model=str(a.detector), score_threshold=a.det_score),
        track=TrackConfig(),
        segment=SegmentConfig(model=str(a.seg_model) if a.seg_model else "", frame_step=a.frame_step),
        gait=GaitConfig(model=str(a.gait_model) if a.gait_model else "", arch=a.gait_arch,
                        trust_checkpoint=a.trust_checkpoint),
        match=MatchConfig(metric=a.metric, threshold=a.threshold, min_frames=a.min_frames,
                          calibration=a.calibration),
        identities=tuple(a.identity),
    )


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s",
                        force=True)


def _subcommand(name: str, argv: list[str]) -> int:
    if name == "weights":
        from .weights import weights_command
        return weights_command(argv)
    if name == "export-onnx":
        from .gait_onnx import export_command
        return export_command(argv)
    if name == "bench":
        from .bench import bench_command
        return bench_command(argv)
    if name == "rematch":
        from .rematch import rematch_command
        return rematch_command(argv)
    if name == "evaluate":
        from .evaluate.command import evaluate_command
        return evaluate_command(argv)
    if name == "calibrate":
        from .evaluate.command import calibrate_command
        return calibrate_command(argv)
    raise AssertionError(name)  # only names from SUBCOMMANDS reach here


SUBCOMMANDS = ("weights", "bench", "export-onnx", "rematch", "evaluate", "calibrate")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:
        from . import __version__
        print(f"allinone {__version__}")
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        _setup_logging("--quiet" in argv)
        return _subcommand(argv[0], argv[1:])
    parser = build_parser()
    parser.epilog = ("other commands: python main.py weights [--download] (list / fetch the default models); "
                     "python main.py rematch RUN_DIR --threshold T (decide again from a run's features); "
                     "python main.py export-onnx --gait-model CKPT --out FILE (the gait model as ONNX); "
                     "python main.py evaluate --dataset ROOT --partition JSON --protocol NAME --gait-model CKPT "
                     "(OpenGait benchmark numbers and open-set error rates); "
                     "python main.py calibrate --evaluation DIR (a threshold for a target false-match rate); "
                     "python main.py bench (speed on the sample videos)")
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    from .pipeline import run
    try:
        check_named(tuple(args.identity))
        result = run(config_from_args(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: no run folder was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.run_dir)
    return 0
