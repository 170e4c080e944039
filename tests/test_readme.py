"""The README's commands are commands this version accepts, and its sample runs as written."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from allinone.cli import SUBCOMMANDS, build_parser
from tests.conftest import REPO, SHARED


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


def test_the_quick_start_page_shows_the_readme_sample():
    """The documentation's quick start shows the same sample, block for block (every flag of every command is
    tested against the generated command line page in tests/test_docs.py)."""
    page = (REPO / "docs" / "getting-started" / "quickstart.md").read_text()
    blocks = [b for b in re.findall(r"```\n(.*?)```", page, flags=re.S) if "make-test-checkpoint" in b]
    assert len(blocks) == 1
    assert [line.strip() for line in blocks[0].replace("\\\n", " ").splitlines() if line.strip()] == \
        _sample_commands()


def _sample_commands() -> list[str]:
    """The README code block that holds the sample-video command ("The sample"): its command lines, as written."""
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        if "make-test-checkpoint" in block and "../shared/" in block:
            return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    raise AssertionError("README.md has no code block with make-test-checkpoint and the ../shared sample command")


def _clone_like(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored: no .venv, output/, weights),
    with ../shared beside it."""
    import shutil
    import subprocess
    repo = dest / "allinone-clone"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a clone has")
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    (dest / "shared").symlink_to(SHARED)
    return repo


def test_readme_sample_commands_run_as_written_on_a_fresh_clone(tmp_path):
    import json
    import subprocess
    import sys
    if not SHARED.is_dir():
        pytest.fail(f"test material not found at {SHARED}")
    commands = _sample_commands()
    assert commands[0] == "python main.py make-test-checkpoint GaitBase_random.pt"
    assert any("--gait-model GaitBase_random.pt" in c for c in commands)
    repo = _clone_like(tmp_path)
    assert not (repo / "GaitBase_random.pt").exists() and not any(p.is_dir() for p in (repo / "output").glob("*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLINONE_")}
    outs = []
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "python"
        res = subprocess.run([sys.executable, *argv[1:]], cwd=repo, capture_output=True, text=True, timeout=900,
                             env=env)
        assert res.returncode == 0, f"{line}\n{res.stderr[-2000:]}"
        outs.append(res)
    assert (repo / "GaitBase_random.pt").is_file()
    # the run's console summary: a row per probe person as in run.json, the report's path, the run folder last
    lines = outs[-1].stdout.strip().splitlines()
    run_dir = repo / lines[-1]
    m = json.loads((run_dir / "run.json").read_text())
    assert lines[0].split() == ["probe", "person", "decision", "distance", "threshold", "basis"]
    rows = lines[1:1 + len(m["matches"])]
    assert len(m["matches"]) >= 1
    thr = m["threshold"]
    for row, match in zip(rows, m["matches"]):
        assert row.startswith(match["probe_video"]) and f"P{match['probe_track']}" in row.split()
        if match["status"] == "match":
            assert f"→ {match['identity']}" in row
        else:
            assert match["status"].replace("_", " ") in row
        assert f"{match['distance']:.4g}" in row and f"{thr['value']:.4g}" in row and thr["basis"] in row
    assert lines[-2] == f"report: {Path(lines[-1]) / 'report.html'}" and (run_dir / "report.html").is_file()
    # the result video of the probe, and the gallery's tracked video; a probe's tracked video is not drawn
    probe = next(v for v in m["videos"] if v["role"] == "probe")
    assert (run_dir / probe["result_video"]).is_file() and "annotated_video" not in probe
    assert (run_dir / m["videos"][0]["annotated_video"]).is_file()
