"""Command line: arguments → RunConfig → pipeline.run(). A user's mistake becomes one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import DetectConfig, GaitConfig, MatchConfig, RunConfig, SegmentConfig, TrackConfig
from .errors import UserError

log = logging.getLogger("allinone")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    d, s, g, m = DetectConfig(), SegmentConfig(), GaitConfig(), MatchConfig()
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
    p.add_argument("--detector", default=d.model, metavar="PATH|NAME",
                   help=f"a YOLOX .onnx file, or an ultralytics model file or name (default: {d.model})")
    p.add_argument("--seg-model", default=s.model, metavar="PATH",
                   help="PP-HumanSeg: a PaddleSeg inference folder (deploy.yaml) or an .onnx file")
    p.add_argument("--gait-model", default=g.model, metavar="PATH", help="an OpenGait GaitBase checkpoint (.pt)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the models run (default: auto = cuda when available)")
    p.add_argument("--frame-step", type=_positive_int, default=s.frame_step, metavar="N",
                   help=f"segment every N-th frame of a track (default: {s.frame_step})")
    p.add_argument("--det-score", type=_unit_float, default=d.score_threshold, metavar="S",
                   help=f"lowest detection score passed to the tracker (default: {d.score_threshold})")
    p.add_argument("--metric", choices=["euc", "cos"], default=m.metric,
                   help=f"gait distance (default: {m.metric}, OpenGait's)")
    p.add_argument("--threshold", type=float, default=m.threshold, metavar="D",
                   help=f"a probe farther than this from its gallery match is unknown (default: {m.threshold})")
    p.add_argument("--min-frames", type=_positive_int, default=m.min_frames, metavar="N",
                   help=f"tracks with fewer silhouettes are too_short (default: {m.min_frames})")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    return p


def config_from_args(a: argparse.Namespace) -> RunConfig:
    return RunConfig(
        gallery=a.gallery, probes=tuple(a.probe), output=a.output, name=a.name, device=a.device, quiet=a.quiet,
        detect=DetectConfig(model=str(a.detector), score_threshold=a.det_score),
        track=TrackConfig(),
        segment=SegmentConfig(model=str(a.seg_model) if a.seg_model else "", frame_step=a.frame_step),
        gait=GaitConfig(model=str(a.gait_model) if a.gait_model else ""),
        match=MatchConfig(metric=a.metric, threshold=a.threshold, min_frames=a.min_frames),
    )


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s",
                        force=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    from .pipeline import run
    try:
        result = run(config_from_args(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: no run folder was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.run_dir)
    return 0
