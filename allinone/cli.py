"""Command line: the command named → its module (commands/); the main command's flags → commands/run.py. A
user's mistake becomes one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from allinone.commands.args import (Parser, add_model_args, add_window_arg, fpir_arg, nonnegative_float,
                                     threshold_arg)
from allinone.config import LiveConfig, MatchConfig
from allinone.decide.identities import parse_identity
from allinone.errors import UserError, print_error

log = logging.getLogger("allinone")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    m = MatchConfig()
    p = Parser(
        prog="python main.py",
        description="Find every walking person in a gallery video and one or more probe videos, follow them, "
                    "cut their silhouettes, embed their gait and tell which gallery person each probe person is.")
    known = p.add_mutually_exclusive_group(required=True)
    known.add_argument("--gallery", type=Path, metavar="VIDEO", help="the gallery video (known people)")
    known.add_argument("--gallery-db", type=Path, metavar="FILE",
                       help="an enrolled gallery (python main.py enroll) in place of a gallery video")
    p.add_argument("--probe", required=True, action="append", metavar="VIDEO|URL",
                   help="a probe video (repeat for several), or live streams: rtsp://..., http(s)://..., "
                        "webcam:N or loop:VIDEO (a file played as a camera), decided while they play")
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
                        "(default): the distance for --target-fpir from the impostor evidence (people seen "
                        "together, different gallery identities, a calibration file); with none, nobody is "
                        "matched (run.json states the estimated FPIR and its basis)")
    p.add_argument("--target-fpir", type=fpir_arg, default=m.target_fpir, metavar="X",
                   help=f"auto threshold: the false-positive identification rate to aim for over this gallery's "
                        f"size (default {m.target_fpir})")
    p.add_argument("--calibration", default="", metavar="FILE",
                   help="a calibration file from python main.py calibrate (default: <checkpoint stem>.calibration"
                        ".json beside the gait checkpoint, when there is one); --threshold D overrides it")
    p.add_argument("--lr-model", default="", metavar="FILE",
                   help="refused on a run: a likelihood ratio belongs to one designated comparison (python main.py "
                        "compare), not to a search's nearest of N identities")
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
    add_window_arg(p)
    p.add_argument("--segment", type=nonnegative_float, default=LiveConfig().segment_s, metavar="S",
                   help=f"live stream: start new events, MOT and video files every S seconds "
                        f"(default {LiveConfig().segment_s:g}: hourly)")
    p.add_argument("--mqtt", default="", metavar="mqtt://HOST[:PORT]/PREFIX",
                   help="publish each decision as JSON on PREFIX/events and PREFIX/<video or stream>/events (QoS 1; "
                        "PREFIX/available says online/offline); a broker that is away is retried while the run goes on")
    p.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST each decision as JSON to URL, with retries (repeat for several)")
    return p


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s",
                        force=True)
    if quiet:  # matplotlib's own notices (font cache builds, missing fonts and glyphs) are not the run's warnings
        import warnings
        logging.getLogger("matplotlib").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"matplotlib(\..*)?$")
        warnings.filterwarnings("ignore", message=r"(Glyph \d+|Matplotlib|findfont)")


# Every command but the run itself, listed once: its module and function (imported on use), and its line in --help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "weights": ("weights", "weights_command", "weights [--download] (list / fetch the default models)"),
    "enroll": ("enroll", "enroll_command", "enroll VIDEO [--name NAME] --gallery-db FILE (keep known people)"),
    "gallery": ("enroll", "gallery_command", "gallery list|rename|remove|export --gallery-db FILE (manage them)"),
    "rematch": ("rematch", "rematch_command", "rematch RUN_DIR --threshold T (decide again from a run's features)"),
    "evaluate": ("evaluate", "evaluate_command", "evaluate --dataset ROOT --partition JSON --protocol NAME "
                 "--gait-model CKPT (OpenGait benchmark numbers and open-set error rates)"),
    "calibrate": ("evaluate", "calibrate_command", "calibrate --evaluation DIR (a threshold for a target false-match "
                  "rate; --lr: a likelihood-ratio model)"),
    "compare": ("compare", "compare_command", "compare QUESTIONED REFERENCE --lr-model FILE (one walker each: LR and "
                "an examiner's report)"),
    "export-onnx": ("export_onnx", "export_command", "export-onnx --gait-model CKPT --out FILE (the gait model as "
                    "ONNX)"),
    "extract": ("extract", "extract_command", "extract VIDEOS... --out DATASET [--engine local|ray] (an "
                "OpenGait-format dataset from many videos)"),
    "watch": ("watch", "watch_command", "watch CONFIG.yaml (many cameras, one service: sightings stored, linked "
              "across cameras)"),
    "bench": ("bench", "bench_command", "bench (speed on the sample videos)"),
    "make-test-checkpoint": ("make_checkpoint", "make_checkpoint_command", "make-test-checkpoint [FILE] (a random "
                             "GaitBase in OpenGait's format, to try the pipeline)"),
}
SUBCOMMANDS = tuple(COMMANDS)


def _subcommand(name: str, argv: list[str]) -> int:
    from importlib import import_module
    module, function, _ = COMMANDS[name]
    return getattr(import_module(f"allinone.commands.{module}"), function)(argv)



def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's argparse parser by its command line ("" for the run itself, "calibrate --lr" for the LR
    fit), for the generated CLI reference (docs) and its tests. A command that builds its parser inline is called
    with --help while ``Parser.parse_args`` hands the parser back instead of parsing, so nothing of it runs."""
    from allinone.commands.args import Parser

    class Built(BaseException):  # not an Exception: no command's handler may catch it
        pass

    def capture(self, *args, **kwargs):
        raise Built(self)

    out: dict[str, argparse.ArgumentParser] = {"": build_parser()}
    calls = [(name, [name]) for name in SUBCOMMANDS]
    calls.insert(SUBCOMMANDS.index("calibrate") + 1, ("calibrate --lr", ["calibrate", "--lr"]))
    original = Parser.parse_args
    Parser.parse_args = capture
    try:
        for label, (name, *extra) in calls:
            try:
                _subcommand(name, [*extra, "--help"])
            except Built as got:
                out[label] = got.args[0]
            else:
                raise RuntimeError(f"{label}: no parser was built")
    finally:
        Parser.parse_args = original
    return out


def _flag(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _fault_context(argv: list[str]) -> tuple[str | None, str, str | None]:
    """For naming paths in a fault: the SQLite file a command line works on and what it is (the --gallery-db,
    enroll and gallery defaulting to gallery.sqlite; evaluate's embedding cache), and its output folder."""
    output = _flag(argv, "--output") or _flag(argv, "--out")
    if argv[:1] in (["evaluate"], ["calibrate"]):
        return _flag(argv, "--cache") or str(Path(output or "output") / ".embed-cache"), "embedding cache", output
    db = _flag(argv, "--gallery-db") or ("gallery.sqlite" if argv[:1] in (["enroll"], ["gallery"]) else None)
    return db, "gallery file", output


class _NoHyphenBreaks(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: command names with hyphens stay whole."""

    def _fill_text(self, text, width, indent):
        import textwrap
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


def main(argv: list[str] | None = None) -> int:
    """The command; a fault of the machine (disk full, permissions: exit 1) or a damaged file (exit 2) ends in one
    line on stderr, Ctrl-C in one line and exit 130 (SIGTERM, SIGHUP: the same, exit 128 + the signal); a bug keeps
    its traceback."""
    from allinone.errors import fault_line, interrupt_on_stop_signals, interrupted_exit, interrupted_line
    argv = sys.argv[1:] if argv is None else list(argv)
    interrupt_on_stop_signals()  # SIGTERM (docker stop, systemd) and SIGHUP end every command as Ctrl-C does
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        print(interrupted_line(exc, "nothing was written"), file=sys.stderr)
        return interrupted_exit(exc)
    except UserError as exc:  # the user's mistake or the machine's fault: one line, its exit code
        print_error(exc)
        return exc.exit_code
    except Exception as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C inside an import (onnxruntime's, say)
            print(interrupted_line(exc.__context__, "nothing was written"), file=sys.stderr)
            return interrupted_exit(exc.__context__)
        fault = fault_line(exc, *_fault_context(argv))
        if fault is None:
            raise
        logging.shutdown()
        print_error(fault[1])
        return fault[0]


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--version"]:
        from allinone import __version__
        print(f"allinone {__version__}")
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        _setup_logging("--quiet" in argv)
        return _subcommand(argv[0], argv[1:])
    if argv and not argv[0].startswith("-"):  # a word where a command or a flag goes: a mistyped command
        print_error(f"unknown command {argv[0]!r} (commands: {', '.join(SUBCOMMANDS)}; a run starts with "
                    "--gallery or --gallery-db; python main.py --help)")
        return EXIT_USER_ERROR
    parser = build_parser()
    parser.formatter_class = _NoHyphenBreaks  # "make-test-checkpoint" stays one word in the help
    parser.epilog = ("other commands (each with its own --help): "
                     + "; ".join(line for _, _, line in COMMANDS.values()) + "; --version")
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    from allinone.commands.run import run_command
    return run_command(args)
