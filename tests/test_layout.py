"""The house: one folder per concept, imports pointing down, no circles (read from the sources with ast, so lazy
imports inside functions count too)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "allinone"
LAYOUT_PAGE = PKG.parent / "docs" / "contributing" / "layout.md"

# the rooms, lowest first: a module may import its own room and rooms below it, never one above
RANKS = {
    "allinone": 0, "allinone.config": 0, "allinone.records": 0, "allinone.errors": 0,
    "allinone.io": 1,
    "allinone.detect": 2, "allinone.segment": 2, "allinone.pose": 2, "allinone.gait": 2,
    "allinone.decide": 3, "allinone.gallery": 3,
    "allinone.results": 4, "allinone.sinks": 4,
    "allinone.stages": 5, "allinone.evaluate": 5, "allinone.datasets": 5,
    "allinone.runner": 6,
    "allinone.watch": 7, "allinone.web": 7,  # one rank: the service serves the page, the page reads the sightings
    "allinone.commands": 8,
    "allinone.cli": 9,
}
TOP_LEVEL = {"__init__.py", "cli.py", "config.py", "records.py", "errors.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import of an allinone module in ``path``."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("allinone")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("allinone"):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (mod, a.name, node.lineno))
    return out


GRAPH = {m: sorted({t for t, _, _ in _imports(m, p) if t in MODULES and t != m}) for m, p in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def test_import_walker_sees_relative_lazy_and_submodule_imports(tmp_path):
    """The checks below are only as good as the walker: it must see the import forms the package uses."""
    f = tmp_path / "m.py"
    f.write_text("from . import records\nfrom ..io.video import VideoSource\n"
                 "def g():\n    from allinone.decide import match\n    import allinone.errors\n")
    got = {(m, n) for m, n, _ in _imports("allinone.stages.m", f)}
    assert got == {("allinone.stages", "records"), ("allinone.io.video", "VideoSource"),
                   ("allinone.decide.match", None), ("allinone.errors", None)}


def test_no_import_cycles():
    """No module imports one that (directly or through others) imports it back."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_between_rooms():
    wrong = []
    for m, targets in GRAPH.items():
        for t in targets:
            if RANKS[_room(t)] > RANKS[_room(m)]:
                wrong.append(f"{m} -> {t}")
    assert not wrong, "imports pointing up: " + "; ".join(wrong)


def test_every_room_has_a_rank():
    assert {_room(m) for m in MODULES} <= set(RANKS)


def test_no_module_takes_another_modules_private_names():
    taken = [f"{m}:{line} takes {t}.{n}" for m, p in MODULES.items() for t, n, line in _imports(m, p)
             if n and n.startswith("_") and not n.startswith("__") and t != m]
    assert not taken, "; ".join(taken)


def test_top_level_holds_only_the_entry_point_configs_records_and_errors():
    top = {p.name for p in PKG.glob("*.py")}
    assert top == TOP_LEVEL


def test_long_files_say_why():
    long = []
    for m, p in MODULES.items():
        text = p.read_text()
        if text.count("\n") > 420:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "400 lines" not in doc:
                long.append(f"{m} ({text.count(chr(10))} lines)")
    assert not long, "files over ~400 lines without a reason in their docstring: " + ", ".join(long)


def test_every_module_says_what_it_is_for():
    missing = [m for m, p in MODULES.items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, missing


def _documented_layout() -> set[str]:
    """The .py files the documentation's Layout page lists (its tree, two spaces an indent level)."""
    text = LAYOUT_PAGE.read_text()
    m = re.search(r"^# Layout\n.*?```\n(.*?)```", text, re.S)
    assert m, f"{LAYOUT_PAGE} has no layout block"
    paths, stack = set(), []
    for line in m.group(1).splitlines():
        entry = re.match(r"(\s*)(\S+)", line)
        if not entry:
            continue
        depth = len(entry.group(1)) // 2
        name = entry.group(2)
        stack[depth:] = [name.rstrip("/")]
        if name.endswith(".py"):
            paths.add("/".join(stack))
    return paths


def test_the_layout_page_lists_every_module_of_the_package():
    on_disk = {str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py") if p.name != "__init__.py"}
    listed = {p for p in _documented_layout() if p.startswith("allinone/")}
    assert listed == on_disk, (f"only on the layout page: {sorted(listed - on_disk)}; "
                               f"only on disk: {sorted(on_disk - listed)}")


def _function_lengths(source: str) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function in ``source``, methods and nested functions included (a nested one
    also counts inside its outer one): lines from the first statement after the docstring to the function's end."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0]
            if len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                first = body[1]
            out.append((node.lineno, node.name, node.end_lineno - first.lineno + 1))
    return out


def _functions_over(source: str, limit: int, where: str) -> list[str]:
    return [f"{where}:{line} {name} {n} lines" for line, name, n in _function_lengths(source) if n > limit]


def test_function_length_skips_the_docstring_and_counts_nested_functions_on_their_own():
    """The length checks below are only as good as the measure: a synthetic module with known lengths."""
    long_doc = '    """' + "doc\n" * 100 + '    """\n'
    source = ("def documented():\n" + long_doc + "    a = 1\n    b = 2\n    return a + b\n"
              + "def eighty():\n" + "    x = 1\n" * 80
              + "def eighty_one():\n" + "    x = 1\n" * 81
              + "class C:\n    async def method(self):\n        'one line'\n        return 1\n"
              + "def outer():\n    def inner():\n" + "        y = 2\n" * 5 + "    return inner\n"
              + "def only_a_docstring():\n    'nothing else'\n")
    lengths = {name: n for _, name, n in _function_lengths(source)}
    assert lengths == {"documented": 3, "eighty": 80, "eighty_one": 81, "method": 1, "outer": 7, "inner": 5,
                       "only_a_docstring": 1}
    eighty_one_at = 1 + 101 + 3 + 1 + 80 + 1
    assert _functions_over(source, 80, "m.py") == [f"m.py:{eighty_one_at} eighty_one 81 lines"]


def test_no_function_over_80_lines():
    long = [x for p in sorted(PKG.rglob("*.py"))
            for x in _functions_over(p.read_text(), 80, str(p.relative_to(PKG.parent)))]
    assert not long, "functions over 80 lines (from the first statement after the docstring):\n" + "\n".join(long)


# the run command and the streamed pass are held to a tighter limit
TIGHT = ("allinone/commands/run.py", "allinone/stages/stream_pass.py", "allinone/stages/video_pass.py",
         "allinone/runner/runner.py", "allinone/runner/folder.py", "allinone/runner/inputs.py")


def test_run_and_the_streamed_pass_have_no_function_over_60_lines():
    long = [x for rel in TIGHT for x in _functions_over((PKG.parent / rel).read_text(), 60, rel)]
    assert not long, "functions over 60 lines (from the first statement after the docstring):\n" + "\n".join(long)
