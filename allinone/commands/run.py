"""The main command, ``python main.py --gallery G --probe P …``: its flags → the run's spec (config.RunConfig) →
the Runner (runner/runner.py) → the decision table and the run folder's path."""
from __future__ import annotations

import argparse
import sys

from allinone.runner.runner import RunResult, run


def run_command(args: argparse.Namespace) -> int:
    from allinone.commands.args import config_from_args
    from allinone.decide.identities import check_named
    from allinone.errors import UserError, interrupted_exit, interrupted_line
    from allinone.results.summary import console_summary
    try:
        if args.lr_model:
            from allinone.decide.lr_model import NOT_FOR_SEARCH
            raise UserError(NOT_FOR_SEARCH)
        check_named(tuple(args.identity))
        result = run(config_from_args(args))
    except KeyboardInterrupt as exc:
        print(interrupted_line(exc, "no run folder was written"), file=sys.stderr)
        return interrupted_exit(exc)
    summary = console_summary(result.manifest, result.run_dir)
    if summary:
        print(summary)
    print(result.run_dir)
    return 0


__all__ = ["RunResult", "run", "run_command"]
