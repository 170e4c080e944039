"""The documentation (docs/, mkdocs.yml) against the program: every flag of every command is on the generated
command line page, every flag the pages or the README write is one the program has, every command they show
parses, every setting is on the generated configuration page, and the site builds with --strict."""
from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from allinone.cli import SUBCOMMANDS, parsers
from scripts.docs_reference import cli_markdown, config_markdown
from tests.conftest import REPO

DOCS = REPO / "docs"
# flags the pages write that belong to other programs: pip, MkDocs, Ray, Chromium; and --version, which the
# program answers before argparse (cli._main)
FOREIGN_FLAGS = {"--index-url", "--strict", "--address", "--node-ip-address", "--print-to-pdf", "--flag"}
EXTRA_FLAGS = {"--version", "--help"}


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser by its command line, subcommands' subparsers included ("gallery rename")."""
    out = {}

    def add(name: str, p: argparse.ArgumentParser) -> None:
        out[name] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub, sp in a.choices.items():
                    add(f"{name} {sub}".strip(), sp)
    for name, p in parsers().items():
        add(name, p)
    return out


PARSERS = _all_parsers()


def _flags(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions for o in a.option_strings if o.startswith("--")} - {"--help"}


def _pages() -> dict[Path, str]:
    """The hand-written pages and the README (the generated pages are stubs on disk)."""
    pages = {p: p.read_text() for p in sorted(DOCS.rglob("*.md"))}
    pages[REPO / "README.md"] = (REPO / "README.md").read_text()
    return pages


def _code_lines(text: str) -> list[str]:
    """Lines of the fenced code blocks, continuation backslashes joined."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        out += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return out


def test_every_command_has_a_parser_and_a_section():
    assert set(parsers()) == {"", "calibrate --lr", *SUBCOMMANDS}
    page = cli_markdown()
    for name in parsers():
        anchor = {"": "run"}.get(name, name.replace(" --", "-"))
        assert "{#" + anchor + "}" in page, name


def test_the_cli_reference_lists_every_flag_of_every_command():
    page = cli_markdown()
    for name, p in PARSERS.items():
        heading = page.index("{#" + ({"": "run"}.get(name) or name.replace(" --", "-").replace(" ", "-")) + "}")
        nxt = re.search(r"\n## ", page[heading:])
        section = page[heading:heading + nxt.start()] if nxt else page[heading:]
        missing = sorted(f for f in _flags(p) if f"`{f}" not in section)
        assert not missing, f"{name or 'the run'}: flags not on the command line page: {missing}"
        for a in p._actions:  # positional arguments too
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
                assert f"`{a.metavar or a.dest}" in section, (name, a.dest)


def test_the_cli_reference_carries_the_help_text():
    """The page is the parsers' own words, not a copy: a flag's help is on the page."""
    page = cli_markdown()
    run = PARSERS[""]
    threshold = next(a for a in run._actions if "--threshold" in a.option_strings)
    assert " ".join(threshold.help.split())[:60] in page


def test_every_flag_the_docs_write_exists():
    known = set().union(*(_flags(p) for p in PARSERS.values())) | EXTRA_FLAGS
    unknown = {}
    for path, text in _pages().items():
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text):
            if flag not in known and flag not in FOREIGN_FLAGS:
                unknown.setdefault(flag, set()).add(str(path.relative_to(REPO)))
    assert not unknown, f"flags the program does not have: {unknown}"


def _parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]] | None:
    if not argv or argv[0].startswith("-"):
        return PARSERS[""], argv
    if argv[0] == "calibrate" and "--lr" in argv:
        return PARSERS["calibrate --lr"], argv[1:]
    if argv[0] in PARSERS:
        return PARSERS[argv[0]], argv[1:]
    return None


def test_the_commands_the_docs_show_parse():
    """Every `python main.py ...` or `allinone ...` line of a code block that is a whole command (no [optional]
    parts, no ... or | placeholders) is accepted by the program's parser."""
    checked = 0
    for path, text in _pages().items():
        for line in _code_lines(text):
            line = line.split("  #")[0].strip()  # a comment after the command
            if line.startswith("python main.py"):
                argv = shlex.split(line)[2:]
            elif line.startswith("allinone ") or line == "allinone":
                argv = shlex.split(line)[1:]
            else:
                continue
            if any(x in line for x in ("[", "...", "|", "(")) or set(argv) & {"--version", "--help"}:
                continue
            found = _parser_for(argv)
            assert found, f"{path.name}: {line}"
            parser, rest = found
            try:
                parser.parse_args(rest)
            except SystemExit as exc:  # argparse exits on an unknown or malformed flag
                pytest.fail(f"{path.relative_to(REPO)}: {line!r} does not parse (exit {exc.code})")
            checked += 1
    assert checked >= 20


def test_the_config_reference_lists_every_setting():
    from allinone import config
    page = config_markdown()

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default):
                yield from keys(type(default), f"{prefix}{f.name}.")
            else:
                yield prefix + f.name
    missing = [k for k in keys(config.RunConfig) if f"`{k}` = " not in page]
    assert not missing, missing
    # a setting's comment in config.py is its text on the page
    assert "ByteTrack's second association stage recovers occluded people" in page


def test_every_page_is_in_the_navigation():
    import yaml
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]

    def pages(items):
        for item in items:
            for value in (item.values() if isinstance(item, dict) else [item]):
                yield from (pages(value) if isinstance(value, list) else [value])
    listed = set(pages(nav))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert listed == on_disk, f"not in the nav: {sorted(on_disk - listed)}; missing: {sorted(listed - on_disk)}"


def test_the_site_builds_strict(tmp_path):
    """What .ci/run does: a broken link or anchor, or a page outside the navigation, fails the build."""
    pytest.importorskip("mkdocs")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--target-fpir" in cli and "gallery rename" in cli  # the generated page, not the stub on disk


def test_the_readme_links_into_the_docs():
    """The README's links are files of the repository (GitHub shows them as they are); the generated pages are
    there as stubs that say how to get them."""
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 20
    missing = sorted({link for link in local if not (REPO / link).exists()})
    assert not missing, missing
