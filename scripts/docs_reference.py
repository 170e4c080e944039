"""The documentation's generated reference pages, and the mkdocs hook that adds them at build time.

``mkdocs build`` (mkdocs.yml ``hooks:``) calls ``on_files``, which writes two pages that exist nowhere on disk:

- ``reference/cli.md``: every command's flags, read from the argparse parsers themselves (``allinone.cli.parsers``),
  so the page cannot drift from what the program accepts;
- ``reference/config.md``: every setting of a run (``allinone/config.py``), its default and the comment beside it;
  and every key of the watch service's config file (``allinone/watch/config.py``).

``python scripts/docs_reference.py OUT_DIR`` writes both files there, to read them without mkdocs.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import sys
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # mkdocs runs as a console script: the checkout is not on sys.path by itself
    sys.path.insert(0, str(REPO))

CLI_PAGE = "reference/cli.md"
CONFIG_PAGE = "reference/config.md"

# what each command is for, in the order of the page (the run first); "" is the run itself
TITLES = {
    "": "Run: decide who walked by",
    "weights": "weights: the default models",
    "enroll": "enroll: keep known people in a gallery file",
    "gallery": "gallery: manage a gallery file",
    "rematch": "rematch: decide again from a run's features",
    "evaluate": "evaluate: benchmark numbers and open-set error rates",
    "calibrate": "calibrate: a threshold from an evaluation",
    "calibrate --lr": "calibrate --lr: a likelihood-ratio model",
    "compare": "compare: one questioned and one reference walker",
    "export-onnx": "export-onnx: the gait model as ONNX",
    "extract": "extract: a dataset from many videos",
    "bench": "bench: speed, memory and scale measurements",
    "make-test-checkpoint": "make-test-checkpoint: a random GaitBase to try the pipeline",
}
# where the guide explains each command (relative to reference/)
GUIDES = {
    "": ("../guide/run.md", "Run and rematch"), "rematch": ("../guide/run.md#rematch", "Rematch"),
    "weights": ("../guide/models.md", "Models and weights"),
    "export-onnx": ("../guide/models.md#export-onnx", "export-onnx"),
    "enroll": ("../guide/enrol.md", "Enrol and galleries"), "gallery": ("../guide/enrol.md", "Enrol and galleries"),
    "evaluate": ("../guide/evaluate.md", "Evaluate and calibrate"),
    "calibrate": ("../guide/evaluate.md#calibrate", "Calibrate"),
    "calibrate --lr": ("../guide/evidence.md", "Evidence for an examiner"),
    "compare": ("../guide/evidence.md#compare", "compare"),
    "extract": ("../guide/datasets.md", "Datasets and Ray"), "bench": ("../speed.md", "Speed"),
    "make-test-checkpoint": ("../getting-started/quickstart.md#the-sample", "The sample"),
}


def anchor(command: str) -> str:
    return {"": "run"}.get(command, command.replace(" --", "-").replace(" ", "-"))


def _md(text: str) -> str:
    """Help text as Markdown text: the characters Markdown would read as markup are escaped."""
    out = " ".join(text.split())
    for ch in ("\\", "*", "_", "<", "[", "]"):
        out = out.replace(ch, "\\" + ch)
    return out


def _default(action: argparse.Action, help_text: str) -> str:
    d = action.default
    if d is None or d is argparse.SUPPRESS or d is False or d == "" or d == [] or "default" in help_text.lower():
        return ""
    return f" Default: `{d}`."


def _option_line(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    help_text = formatter._expand_help(action) if action.help else ""
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}" if action.choices
                                         else action.dest.upper())
            name += f" {metavar}"
    else:
        name = action.metavar or action.dest
        if action.nargs in ("*", "+"):
            name += " ..."
    notes = []
    if action.required and action.option_strings:
        notes.append("required")
    if isinstance(action, argparse._AppendAction):
        notes.append("repeatable")
    if action.choices and action.metavar:
        notes.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    note = f" ({'; '.join(notes)})" if notes else ""
    text = _md(help_text)
    return f"- `{name}`{note}" + (f": {text}" if text else "") + (_default(action, help_text) if text else
                                                                   _default(action, help_text).replace(" D", ": d", 1))


def _parser_markdown(command: str, p: argparse.ArgumentParser, level: int = 2, summary: str = "") -> list[str]:
    formatter = p._get_formatter()
    lines = [f"{'#' * level} {TITLES.get(command, command)} {{#{anchor(command)}}}", ""]
    for text in (summary, p.description):
        if text:
            lines += [_md(text), ""]
    if command in GUIDES:
        target, title = GUIDES[command]
        lines += [f"More in the guide: [{title}]({target}).", ""]
    lines += ["```", " ".join(p.format_usage().split()).replace("usage: ", "", 1), "```", ""]
    groups = [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    positional = [a for a in p._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    if positional:
        lines += ["Arguments:", ""] + [_option_line(a, formatter) for a in positional] + [""]
    if groups:
        lines += ["Options:", ""] + [_option_line(a, formatter) for a in groups] + [""]
    exclusive = [g for g in p._mutually_exclusive_groups if len(g._group_actions) > 1]
    for g in exclusive:
        names = " or ".join(f"`{a.option_strings[0]}`" for a in g._group_actions)
        lines += [f"Give {names}{' (one of them is required)' if g.required else ', not both'}.", ""]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            for name, sub in a.choices.items():
                lines += _parser_markdown(f"{command} {name}", sub, level + 1, helps.get(name) or "")
    return lines


def cli_markdown() -> str:
    """The CLI reference page: every command's usage and flags, from the parsers."""
    from allinone.cli import parsers
    ps = parsers()
    for name in ps:
        TITLES.setdefault(name, name)
    lines = [
        "# Command line",
        "",
        "Generated from the program's own argparse parsers each time the documentation is built "
        "(`scripts/docs_reference.py`), so it lists exactly what this version accepts. `python main.py` from a "
        "checkout and `allinone` once the package is installed are the same program: every command below works "
        "with either. Every command also takes `-h`/`--help`; `python main.py --version` prints the version.",
        "",
        "A mistake on the command line (an unknown flag, a value of the wrong form) ends with one line, "
        "`error: ... (see python main.py ... --help)`, and exit code 2; see [Faults and bad input](../faults.md).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name in ps:
        title = TITLES[name].split(": ", 1)[-1]
        shown = f"python main.py {name}" if name else "python main.py --gallery ... --probe ..."
        lines.append(f"| [`{shown}`](#{anchor(name)}) | {title} |")
    lines.append("")
    for name, p in ps.items():
        lines += _parser_markdown(name, p)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------
# configuration keys


def _comments(source: str) -> dict[int, str]:
    """Line number → the text of a comment on that line (without '#')."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def _field_notes(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Per dataclass: field → the comment block right above it (or on its line); and each class's docstring.
    A field with no comment of its own, right below a field whose comment block stands above it, shares that
    comment (it describes both, as `step` and `window` in LiveConfig)."""
    source = path.read_text()
    comments = _comments(source)
    notes: dict[str, dict[str, str]] = {}
    docs: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs[node.name] = " ".join((ast.get_docstring(node) or "").split())
        fields: dict[str, str] = {}
        shared, previous_line = "", -1
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            block, line = [], item.lineno - 1
            while line in comments and source.splitlines()[line - 1].lstrip().startswith("#"):
                block.insert(0, comments[line])
                line -= 1
            above = " ".join(block)
            if item.lineno in comments:  # a comment after the field on its line
                block.append(comments[item.lineno])
            text = " ".join(block)
            if not text and shared and item.lineno == previous_line + 1:
                text = shared
            fields[item.target.id] = text
            shared = above or (shared if not text or text == shared else "")
            previous_line = item.end_lineno or item.lineno
        notes[node.name] = fields
    return notes, docs


# sections of the former one-page README that comments in the code still name, and the page that holds each now
README_SECTIONS = {
    "Silhouette quality": "../concepts/quality.md", "The threshold": "../concepts/threshold.md",
    "How a probe person is decided": "../concepts/decision.md", "Evidence for an examiner": "../guide/evidence.md",
    "Live cameras": "../guide/live.md", "Speed": "../speed.md", "Evaluate a checkpoint": "../guide/evaluate.md",
}


def _readme_refs(text: str) -> str:
    """``README, "Section"`` in a comment → a link to the page that holds that section."""
    import re

    def link(m):
        page = README_SECTIONS.get(m.group(2))
        return f"[{m.group(2)}]({page})" if page else m.group(0)
    return re.sub(r'README(,)? "([^"]+)"', link, text)


def _value(v) -> str:
    if isinstance(v, Path):
        return f"`{v}`"
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, tuple):
        return "`[]`" if not v else f"`{list(v)}`"
    if isinstance(v, str):
        return f'`"{v}"`'
    return f"`{v}`"


def config_markdown() -> str:
    """The configuration reference page: RunConfig's settings (as run.json ``settings`` keys them), and the
    other setting groups of allinone/config.py."""
    from allinone import config
    from allinone.cli import build_parser
    notes, docs = _field_notes(REPO / "allinone" / "config.py")
    # a run setting with a flag of the same name (output: --output); the others are set through config_from_args
    flags = {a.dest: a.option_strings[0] for a in build_parser()._actions if a.option_strings}
    lines = [
        "# Configuration keys",
        "",
        "Generated from `allinone/config.py` each time the documentation is built: every setting of a run, its "
        "default and the trade-off written beside it in the code. A run records all of them, with the defaults "
        "filled in, in `run.json` under `settings` (keys as below: `match.threshold` is "
        "`settings.match.threshold`). The [command line](cli.md) sets the common ones; the rest are changed in "
        "`allinone/config.py` or by building a `RunConfig` in Python. There is no configuration file.",
        "",
    ]
    seen: set[str] = set()

    def section(cls, prefix: str, title: str) -> None:
        seen.add(cls.__name__)
        nested = []
        rows = []
        for f in dataclasses.fields(cls):
            default = (f.default if f.default is not dataclasses.MISSING else
                       f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if dataclasses.is_dataclass(default):
                nested.append((type(default), f"{prefix}{f.name}."))
                continue
            shown = "(required)" if default is dataclasses.MISSING else _value(default)
            text = _readme_refs(_md(notes.get(cls.__name__, {}).get(f.name, "")))
            flag = None
            if cls is config.RunConfig:  # probes: --probe, identities: --identity
                flag = flags.get(f.name) or (flags.get(f.name[:-1]) if f.name.endswith("s") else None)
            if flag:
                text = (text.rstrip(".") + ". " if text else "") + f"Set by `{flag}`."
            rows.append(f"- `{prefix}{f.name}` = {shown}" + (f": {text}" if text else ""))
        lines.append(f"## {title} {{#{(prefix.rstrip('.') or 'run').replace('.', '-')}}}")
        lines.append("")
        if docs.get(cls.__name__):
            lines.extend([_readme_refs(_md(docs[cls.__name__])), ""])
        lines.extend(rows + [""])
        for sub, sub_prefix in nested:
            section(sub, sub_prefix, f"`{sub_prefix.rstrip('.')}` ({sub.__name__})")

    section(config.RunConfig, "", "The run (RunConfig)")
    others = [c for n, c in vars(config).items() if dataclasses.is_dataclass(c) and isinstance(c, type)
              and c.__module__ == config.__name__ and n not in seen]
    for cls in others:
        section(cls, f"{cls.__name__}.", f"{cls.__name__} (not part of a run's settings)")
    lines += watch_keys_markdown()
    return "\n".join(lines).rstrip() + "\n"


def watch_keys_markdown() -> list[str]:
    """The watch service's config file: every key the loader accepts, from the same dicts it checks against
    (allinone/watch/config.py KEYS, CAMERA_KEYS)."""
    from allinone.watch.config import CAMERA_KEYS, CAMERA_REQUIRED, KEYS, REQUIRED
    lines = ["## The watch service's config file {#watch}", "",
             "`python main.py watch CONFIG.yaml` reads a YAML file with these keys (generated from "
             "`allinone/watch/config.py`, the same table the loader accepts: an unknown key is refused with the "
             "closest valid name). The [live cameras guide](../guide/live.md#the-watch-service) shows a config.",
             ""]
    lines += [f"- `{k}`{' (required)' if k in REQUIRED else ''}: {_md(v)}" for k, v in KEYS.items()]
    lines += ["", "Each entry of `cameras`:", ""]
    lines += [f"- `{k}`{' (required)' if k in CAMERA_REQUIRED else ''}: {_md(v)}" for k, v in CAMERA_KEYS.items()]
    return lines + [""]


# ---------------------------------------------------------------------------------------------------------------
# the mkdocs hook


def on_files(files, config):
    """mkdocs hook: add the generated pages to the site's files (they are not on disk)."""
    from mkdocs.structure.files import File
    for uri, make in ((CLI_PAGE, cli_markdown), (CONFIG_PAGE, config_markdown)):
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=make()))
    return files


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site-reference")
    for uri, make in ((CLI_PAGE, cli_markdown), (CONFIG_PAGE, config_markdown)):
        target = out / uri
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(make())
        print(target)
