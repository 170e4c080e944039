"""The README's commands are commands this version accepts."""
from __future__ import annotations

import re
import shlex

from allinone.cli import SUBCOMMANDS, build_parser
from tests.conftest import REPO


def _commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("python main.py"):
                out.append(shlex.split(line)[2:])
    return out


def test_readme_run_commands_parse():
    commands = _commands()
    runs = [c for c in commands if c and c[0] not in SUBCOMMANDS and "[--probe" not in " ".join(c)]
    assert len(runs) >= 2  # the quick start and the sample-video command
    parser = build_parser()
    for argv in runs:
        args = parser.parse_args(argv)  # argparse exits (SystemExit) on an unknown or malformed flag
        assert (args.gallery or args.gallery_db) and args.probe


def test_readme_flag_table_lists_every_flag():
    text = (REPO / "README.md").read_text()
    flags = {opt for a in build_parser()._actions for opt in a.option_strings if opt.startswith("--")}
    flags.discard("--help")
    missing = sorted(f for f in flags if f"`{f}" not in text)
    assert not missing, f"flags not documented in README.md: {missing}"
