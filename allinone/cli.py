"""Command line: arguments → RunConfig → pipeline.run(). A user's mistake becomes one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import DetectConfig, GaitConfig, LiveConfig, MatchConfig, RunConfig, SegmentConfig, TrackConfig
from .errors import UserError
from .gait.registry import ARCHS
from .argtypes import int_in_range, nonnegative_float, positive_int, threshold_arg, unit_float
from .identities import check_named, parse_identity

GAIT_ARCHS = tuple(ARCHS)

log = logging.getLogger("allinone")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


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


def build_parser() -> argparse.ArgumentParser:
    m = MatchConfig()
    p = argparse.ArgumentParser(
        prog="python main.py",
        description="Find every walking person in a gallery video and one or more probe videos, follow them, "
                    "cut their silhouettes, embed their gait and tell which gallery person each probe person is.")
    known = p.add_mutually_exclusive_group(required=True)
    known.add_argument("--gallery", type=Path, metavar="VIDEO", help="the gallery video (known people)")
    known.add_argument("--gallery-db", type=Path, metavar="FILE",
                       help="an enrolled gallery (python main.py enroll) in place of a gallery video")
    p.add_argument("--probe", required=True, action="append", metavar="VIDEO|URL",
                   help="a probe video (repeat for several), or one live stream: rtsp://..., http(s)://... or "
                        "webcam:N, decided while it plays")
    p.add_argument("--output", type=Path, default=Path("output"), metavar="DIR",
                   help="folder that receives the run folder (default: output)")
    p.add_argument("--name", default=None, metavar="RUN", help="run folder name (default: a timestamp)")
    add_model_args(p)
    p.add_argument("--track-only", action="store_true",
                   help="detect and track only (no silhouettes, embeddings or matching)")
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
    p.add_argument("--save-silhouettes", choices=["pkl", "png", "none"], default="pkl",
                   help="pkl (default): one OpenGait pickle per track; png: also every raw mask as a PNG; none")
    p.add_argument("--duration", type=nonnegative_float, default=0.0, metavar="S",
                   help="live stream: stop after S seconds (default: when the stream ends, or Ctrl-C)")
    p.add_argument("--reconnect", type=nonnegative_float, default=LiveConfig().reconnect_s, metavar="S",
                   help=f"live stream: keep reconnecting a dropped stream for S seconds "
                        f"(default {LiveConfig().reconnect_s:g})")
    return p


def config_from_args(a: argparse.Namespace) -> RunConfig:
    from .video import is_stream
    return RunConfig(
        gallery=a.gallery, probes=tuple(p if is_stream(p) else Path(p) for p in a.probe), output=a.output, name=a.name, device=a.device, quiet=a.quiet,
        track_only=getattr(a, "track_only", False), checkpoints=a.checkpoints, download=not a.no_download,
        save_silhouettes=getattr(a, "save_silhouettes", "pkl"), gallery_db=getattr(a, "gallery_db", None),
        rotate=a.rotate,
        detect=DetectConfig(model=str(a.detector), score_threshold=a.det_score, batch=a.det_batch),
        track=TrackConfig(),
        segment=SegmentConfig(model=str(a.seg_model) if a.seg_model else "", frame_step=a.frame_step),
        gait=GaitConfig(model=str(a.gait_model) if a.gait_model else "", arch=a.gait_arch,
                        trust_checkpoint=a.trust_checkpoint),
        match=MatchConfig(metric=getattr(a, "metric", "auto"), threshold=getattr(a, "threshold", None),
                          min_frames=a.min_frames, calibration=getattr(a, "calibration", "")),
        identities=tuple(getattr(a, "identity", ())),
        live=LiveConfig(duration_s=getattr(a, "duration", 0.0), reconnect_s=getattr(a, "reconnect", 30.0)),
    )


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s",
                        force=True)


def _subcommand(name: str, argv: list[str]) -> int:
    if name == "weights":
        from .weights import weights_command
        return weights_command(argv)
    if name == "export-onnx":
        from .gait.onnx import export_command
        return export_command(argv)
    if name == "bench":
        from .bench import bench_command
        return bench_command(argv)
    if name == "rematch":
        from .rematch import rematch_command
        return rematch_command(argv)
    if name == "enroll":
        from .enroll import enroll_command
        return enroll_command(argv)
    if name == "gallery":
        from .enroll import gallery_command
        return gallery_command(argv)
    if name == "extract":
        from .extract import extract_command
        return extract_command(argv)
    if name == "evaluate":
        from .evaluate.command import evaluate_command
        return evaluate_command(argv)
    if name == "calibrate":
        from .evaluate.command import calibrate_command
        return calibrate_command(argv)
    raise AssertionError(name)  # only names from SUBCOMMANDS reach here


SUBCOMMANDS = ("weights", "bench", "export-onnx", "rematch", "evaluate", "calibrate", "enroll", "gallery",
               "extract")


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
    parser.epilog = ("other commands (each with its own --help): "
                     "weights [--download] (list / fetch the default models); "
                     "enroll VIDEO [--name NAME] --gallery-db FILE (keep known people); "
                     "gallery list|rename|remove|export --gallery-db FILE (manage them); "
                     "rematch RUN_DIR --threshold T (decide again from a run's features); "
                     "evaluate --dataset ROOT --partition JSON --protocol NAME --gait-model CKPT (OpenGait benchmark "
                     "numbers and open-set error rates); calibrate --evaluation DIR (a threshold for a target "
                     "false-match rate); export-onnx --gait-model CKPT --out FILE (the gait model as ONNX); "
                     "extract VIDEOS... --out DATASET [--engine local|ray] (an OpenGait-format dataset from many "
                     "videos); bench (speed on the sample videos); --version")
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
