"""`pip install .` into a fresh virtual environment gives a working `allinone` command: --help, --version, the
package data, and the README sample with `allinone` in place of `python main.py`.

What is real and what is borrowed: installing torch, Paddle and the rest again from the network would take many
minutes and need the network, so the fresh environment sees the dependencies already installed where the tests run:
a .pth file in its site-packages names this environment's site-packages (appended to sys.path after its own). The
package itself is installed for real into the fresh environment (its python running `pip install --no-deps
--no-build-isolation --no-index .`, offline, from a copy of the checkout as a clone has it; pip and setuptools come
through the same .pth), and every command runs through the console script that pip wrote, from a folder outside the checkout, so it imports the
installed copy, never the checkout.
"""
from __future__ import annotations

import json
import os
import shlex
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED
from tests.test_readme import _clone_like, _sample_commands

# a static file in a room's static/ folder (where a web page's files go): it must be installed with the package
STATIC = Path("allinone") / "web" / "static" / "css" / "probe.css"


def _run(argv, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLINONE_", "PYTHON"))}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv with the package installed by `pip install .`: its python, its allinone script, its
    site-packages."""
    tmp = tmp_path_factory.mktemp("package")
    src = _clone_like(tmp)  # tmp/allinone-clone, tmp/shared beside it
    (src / STATIC).parent.mkdir(parents=True, exist_ok=True)
    (src / STATIC).write_text("body { margin: 0 }\n")
    if not (src / STATIC.parents[1] / "__init__.py").exists():
        (src / STATIC.parents[1] / "__init__.py").write_text('"""A room with a static/ folder (test_package)."""\n')
    env_dir = tmp / "venv"
    # without its own pip and setuptools (ensurepip's would shadow the newer ones the .pth brings, and its
    # setuptools cannot build a wheel without the wheel package): pip and setuptools come through the .pth too
    res = _run([sys.executable, "-m", "venv", "--without-pip", env_dir], timeout=300)
    assert res.returncode == 0, res.stderr
    python = env_dir / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "_allinone_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    res = _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                "--disable-pip-version-check", "."], cwd=src, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return {"python": python, "script": env_dir / "bin" / "allinone", "purelib": purelib, "tmp": tmp}


def test_the_console_script_is_installed_and_imports_the_installed_copy(installed):
    assert installed["script"].is_file() and os.access(installed["script"], os.X_OK)
    res = _run([installed["python"], "-c", "import allinone; print(allinone.__file__)"], cwd=installed["tmp"])
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).is_relative_to(installed["purelib"])


def test_allinone_help_and_version(installed):
    res = _run([installed["script"], "--help"], cwd=installed["tmp"], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--gallery" in res.stdout and "--probe" in res.stdout and "make-test-checkpoint" in res.stdout
    from allinone import __version__
    res = _run([installed["script"], "--version"], cwd=installed["tmp"], timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"allinone {__version__}"


def test_the_package_metadata(installed):
    """Name, version and dependencies as pyproject.toml makes them from requirements/*.txt; the extras."""
    code = ("import importlib.metadata as m, json; d = m.distribution('allinone'); "
            "print(json.dumps({'version': d.version, 'requires': d.requires, "
            "'extras': d.metadata.get_all('Provides-Extra'), 'python': d.metadata['Requires-Python']}))")
    res = _run([installed["python"], "-c", code], cwd=installed["tmp"])
    assert res.returncode == 0, res.stderr
    meta = json.loads(res.stdout)
    from allinone import __version__
    assert meta["version"] == __version__ and meta["python"]

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def key(text: str) -> tuple:
        r = Requirement(text)
        return canonicalize_name(r.name), r.specifier, str(r.marker or "")

    def listed(name: str) -> set:
        lines = (REPO / "requirements" / name).read_text().splitlines()
        return {key(line.split("#")[0]) for line in lines if line.split("#")[0].strip()}
    requires = [Requirement(r) for r in meta["requires"]]
    core = {key(str(r)) for r in requires if r.marker is None}
    assert core == listed("core.txt")
    assert set(meta["extras"]) == {"ray", "mqtt", "web", "all", "test", "docs"}
    for extra in ("ray", "mqtt", "web", "test", "docs"):
        got = {(canonicalize_name(r.name), r.specifier) for r in requires
               if r.marker is not None and r.marker.evaluate({"extra": extra})}
        assert got == {k[:2] for k in listed(f"{extra}.txt")}, extra


def test_static_files_are_installed_as_package_data(installed):
    assert (installed["purelib"] / STATIC).read_text() == "body { margin: 0 }\n"
    for name in ("index.html", "app.js", "app.css"):  # the review page's own files (allinone/web/static/)
        assert (installed["purelib"] / "allinone" / "web" / "static" / name).is_file(), name


def test_the_readme_sample_runs_with_the_installed_command(installed):
    """The README's sample, `python main.py` replaced by the console script, run in a folder with ../shared beside it
    and no checkout: the same console summary and run folder as tests/test_readme.py checks."""
    if not SHARED.is_dir():
        pytest.fail(f"test material not found at {SHARED}")
    work = installed["tmp"] / "work"
    work.mkdir()
    outs = []
    for line in _sample_commands():
        argv = shlex.split(line)
        assert argv[:2] == ["python", "main.py"], line
        res = _run([installed["script"], *argv[2:]], cwd=work, timeout=900)
        assert res.returncode == 0, f"{line}\n{res.stderr[-2000:]}"
        outs.append(res)
    assert (work / "GaitBase_random.pt").is_file()
    lines = outs[-1].stdout.strip().splitlines()
    run_dir = work / lines[-1]
    m = json.loads((run_dir / "run.json").read_text())
    assert lines[0].split() == ["probe", "person", "decision", "distance", "threshold", "basis"]
    assert len(m["matches"]) >= 1 and lines[-2] == f"report: {Path(lines[-1]) / 'report.html'}"
    assert (run_dir / "report.html").is_file()
    probe = next(v for v in m["videos"] if v["role"] == "probe")
    assert (run_dir / probe["result_video"]).is_file()
    assert not (work / "allinone").exists() and not (work / "main.py").exists()  # nothing of a checkout here
