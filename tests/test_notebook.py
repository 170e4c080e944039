"""demo/allinone_colab.ipynb: a valid notebook without outputs whose code parses, whose cells carry their tags, and
whose offline-safe helpers read a run folder correctly. The offline-safe cells are executed here; nothing else."""
from __future__ import annotations

import ast
import json
import re
import shlex
import string
from pathlib import Path

import cv2
import numpy as np
import pytest

import nbformat  # in requirements.txt

NOTEBOOK = Path(__file__).resolve().parents[1] / "demo" / "allinone_colab.ipynb"
KNOWN_TAGS = {"network", "upload", "models", "results", "download"}
MAGIC = re.compile(r"^(\s*)[!%]")


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(str(NOTEBOOK), as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _needs(cell) -> list:
    return cell.metadata["allinone"]["needs"]


def _as_python(source: str) -> str:
    """IPython `!cmd` / `%magic` lines become `pass` at the same indentation, so the rest parses as Python."""
    return "\n".join(MAGIC.sub(r"\1pass  # ", line) if MAGIC.match(line) else line for line in source.splitlines())


def _magic_lines(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if MAGIC.match(line)]


# ---------------------------------------------------------------------------------------------------------------
# structure


def test_valid_nbformat_v4_python3_without_outputs(nb):
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    raw = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], cell["id"]
            assert cell["execution_count"] is None, cell["id"]


def test_code_cells_parse_as_python(nb):
    cells = _code_cells(nb)
    assert len(cells) >= 6
    for cell in cells:
        ast.parse(_as_python(cell.source), filename=f"<cell {cell.id}>")
        # IPython evaluates {expr} in ! and % lines: each must be a Python expression
        for line in _magic_lines(cell.source):
            for _, field, _, _ in string.Formatter().parse(line):
                if field:
                    ast.parse(field, mode="eval")


def test_every_code_cell_is_tagged_and_tags_are_documented(nb):
    docs = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    used = set()
    for cell in _code_cells(nb):
        needs = _needs(cell)
        assert isinstance(needs, list) and set(needs) <= KNOWN_TAGS, (cell.id, needs)
        used.update(needs)
        if not needs:  # offline-safe cells are executed as plain Python by the tests below
            assert not _magic_lines(cell.source), cell.id
    assert {"network", "upload", "models"} <= used
    for tag in used:
        assert f"`{tag}`" in docs, tag
    assert "metadata.allinone.needs" in docs


def test_tags_match_what_the_cells_do(nb):
    for cell in _code_cells(nb):
        src, needs = cell.source, set(_needs(cell))
        magic = " ".join(_magic_lines(src))
        if "git clone" in magic or "pip install" in magic or "--download" in magic:
            assert "network" in needs, cell.id
        if "from google.colab" in src and "files.upload(" in src:
            assert "upload" in needs, cell.id
        if "from google.colab" in src and "files.download(" in src:
            assert "download" in needs, cell.id
        if "{ALLINONE} --gallery" in magic or "{ALLINONE} {pipeline_args(" in magic:
            assert "models" in needs, cell.id


def test_the_steps_are_there_in_order(nb):
    magic = [(i, line) for i, c in enumerate(nb.cells) if c.cell_type == "code" for line in _magic_lines(c.source)]
    sources = [c.source if c.cell_type == "code" else "" for c in nb.cells]

    def first(pred) -> int:
        hits = [i for i, line in magic if pred(line)]
        assert hits
        return hits[0]

    clone = first(lambda s: s.startswith("!git clone") and "REPO_URL" in s)
    pip = first(lambda s: s.startswith("%pip"))
    weights = first(lambda s: s == "!{ALLINONE} weights --download")
    status = first(lambda s: s == "!{ALLINONE} weights")
    upload = next(i for i, s in enumerate(sources) if "upload_into(colab_files.upload" in s)
    run = first(lambda s: s.startswith("!{ALLINONE} {pipeline_args(") and "RUN_NAME" in s)
    show = next(i for i, s in enumerate(sources) if s.startswith("show_results("))
    assert clone < pip < weights <= status < upload < run < show
    assert any("REPO_URL = " in s for s in sources)
    install = sources[next(i for i, line in magic if line.startswith("%pip"))]
    assert "install_commands(" in install
    # the command the later cells run is the one that install put there, found after it
    assert install.index("%pip") < install.index("ALLINONE = allinone_command()")
    assert not any("main.py" in line for _, line in magic)  # the installed command, not the checkout's script


def test_the_notebook_asks_for_a_gpu_runtime(nb):
    assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"]["gpuType"] == "T4"
    assert "without a gpu" in nb.cells[0].source.lower()


# ---------------------------------------------------------------------------------------------------------------
# the offline-safe cells, executed


@pytest.fixture(scope="module")
def ns(nb):
    import matplotlib
    matplotlib.use("Agg")
    namespace = {"__name__": "__main__"}
    for cell in _code_cells(nb):
        if not _needs(cell):
            exec(compile(cell.source, f"<cell {cell.id}>", "exec"), namespace)
    return namespace


def test_offline_cells_define_settings_and_helpers(ns):
    assert isinstance(ns["RUN_NAME"], str) and ns["RUN_NAME"]
    for name in ("upload_into", "check_inputs", "pipeline_args", "match_table", "result_videos", "middle_frame",
                 "preview_image", "show_results"):
        assert callable(ns[name]), name


def test_pipeline_args_are_read_back_by_the_real_cli(ns, tmp_path):
    from allinone.cli import build_parser
    gallery = tmp_path / "my gallery.mp4"
    probes = [tmp_path / "probe 1.mp4", tmp_path / "it's.mp4"]
    line = ns["pipeline_args"](gallery, probes, "colab_demo", output=tmp_path / "out dir")
    args = build_parser().parse_args(shlex.split(line))
    assert args.gallery == gallery
    assert [Path(p) for p in args.probe] == probes  # --probe is text: it may also be a stream address
    assert args.name == "colab_demo"
    assert args.output == tmp_path / "out dir"


def test_check_inputs(ns, tmp_path):
    check = ns["check_inputs"]
    g, p = tmp_path / "g.mp4", tmp_path / "p.mp4"
    g.write_bytes(b"x")
    p.write_bytes(b"y")
    assert check(str(g), str(p)) == (g, [p])
    assert check(g, [p, p]) == (g, [p, p])
    with pytest.raises(ValueError, match="gallery"):
        check("", [p])
    with pytest.raises(ValueError, match="probe"):
        check(g, [])
    with pytest.raises(ValueError, match="nope.mp4"):
        check(g, [tmp_path / "nope.mp4"])


@pytest.mark.parametrize("writes_to_cwd", [True, False])
def test_upload_into_keeps_the_uploads_in_the_folder(ns, tmp_path, monkeypatch, writes_to_cwd):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    folder = tmp_path / "uploads" / "probe"
    folder.mkdir(parents=True)
    (folder / "old.mp4").write_bytes(b"from an earlier upload")
    received = {"a.mp4": b"\x00\x01video-a", "b c.mov": b"video-b" * 10}

    def fake_colab_upload():  # stands in for the browser dialog, which saves into the working folder
        if writes_to_cwd:
            for name, data in received.items():
                Path(name).write_bytes(data)
        return dict(received)

    saved = ns["upload_into"](fake_colab_upload, folder)
    assert saved == [folder / "a.mp4", folder / "b c.mov"]
    assert [p.read_bytes() for p in saved] == list(received.values())
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4", "b c.mov"]
    assert Path.cwd() == work and not list(work.iterdir())


# ---------------------------------------------------------------------------------------------------------------
# reading a run folder


W, H, N_FRAMES = 96, 64, 9


def _write_video(path: Path, blue_step: int) -> None:
    """Frame i is a flat BGR color (blue = i * blue_step, green 40, red 220)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    assert vw.isOpened()
    for i in range(N_FRAMES):
        vw.write(np.full((H, W, 3), (i * blue_step, 40, 220), np.uint8))
    vw.release()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "output" / "colab_demo"
    _write_video(d / "G-gal_P-walk.mp4", blue_step=25)
    _write_video(d / "G-gal_P-walk-2.mp4", blue_step=5)
    _write_video(d / "videos" / "walk.mp4", blue_step=10)
    manifest = {
        "version": 2,
        "videos": [
            {"name": "gal", "role": "gallery", "annotated_video": "videos/gal.mp4", "tracks": []},
            {"name": "walk", "role": "probe", "annotated_video": "videos/walk.mp4",
             "result_video": "G-gal_P-walk.mp4", "tracks": []},
            {"name": "walk-2", "role": "probe", "annotated_video": "videos/walk-2.mp4",
             "result_video": "G-gal_P-walk-2.mp4", "tracks": []},
        ],
        "matches": [
            {"probe_video": "walk", "probe_track": 3, "identity": "G1", "reason": None,
             "distance": 0.41234, "status": "match",
             "ranking": [{"identity": "G1", "distance": 0.41234}, {"identity": "G2", "distance": 0.9},
                         {"identity": "Ann", "distance": 1.25}, {"identity": "G7", "distance": 2.0}]},
            {"probe_video": "walk", "probe_track": 4, "identity": None, "reason": "taken",
             "distance": 1.7, "status": "unknown", "ranking": [{"identity": "G2", "distance": 1.7}]},
            {"probe_video": "walk-2", "probe_track": 1, "identity": None, "reason": "too_few_silhouettes",
             "distance": None, "status": "too_short", "ranking": []},
        ],
    }
    (d / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    return d


EXPECTED_ROWS = [
    {"probe_video": "walk", "probe_track": 3, "status": "match", "identity": "G1", "distance": 0.41234,
     "reason": None, "ranking": "G1:0.412, G2:0.900, Ann:1.250"},
    {"probe_video": "walk", "probe_track": 4, "status": "unknown", "identity": None, "distance": 1.7,
     "reason": "taken", "ranking": "G2:1.700"},
    {"probe_video": "walk-2", "probe_track": 1, "status": "too_short", "identity": None, "distance": None,
     "reason": "too_few_silhouettes", "ranking": ""},
]


def test_match_table_rows(ns, run_dir):
    assert ns["match_table"](run_dir, as_frame=False) == EXPECTED_ROWS
    assert tuple(EXPECTED_ROWS[0]) == ns["MATCH_COLUMNS"]


def test_match_table_as_dataframe(ns, run_dir):
    pd = pytest.importorskip("pandas")
    df = ns["match_table"](run_dir, as_frame=True)
    assert isinstance(df, pd.DataFrame)
    assert list(df["probe_track"]) == [3, 4, 1]
    assert list(df["status"]) == ["match", "unknown", "too_short"]


def test_match_table_of_a_run_without_matches(ns, run_dir):
    manifest = json.loads((run_dir / "run.json").read_text())
    del manifest["matches"]
    (run_dir / "run.json").write_text(json.dumps(manifest))
    assert ns["match_table"](run_dir, as_frame=False) == []


def test_missing_run_json_names_the_file(ns, tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        ns["match_table"](tmp_path, as_frame=False)


def test_preview_is_the_middle_frame_of_the_first_result_video_in_rgb(ns, run_dir):
    video, rgb = ns["preview_image"](run_dir)
    assert video == run_dir / "G-gal_P-walk.mp4"
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    mean = rgb.reshape(-1, 3).mean(axis=0)
    # middle of 9 frames is frame 4: blue 100 (neighbours 75 and 125); red is 220, so channel 0 is red (RGB)
    assert abs(mean[0] - 220) < 10 and abs(mean[1] - 40) < 10 and abs(mean[2] - 100) < 10


def test_preview_falls_back_to_the_tracked_probe_video(ns, run_dir):
    manifest = json.loads((run_dir / "run.json").read_text())
    for v in manifest["videos"]:
        v.pop("result_video", None)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    video, rgb = ns["preview_image"](run_dir)
    assert video == run_dir / "videos" / "walk.mp4"  # videos/walk-2.mp4 does not exist
    assert abs(rgb[..., 2].mean() - 40) < 10  # frame 4 of blue_step 10


def test_middle_frame_refuses_a_non_video(ns, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="bad.mp4"):
        ns["middle_frame"](bad)


def test_show_results_prints_the_table_and_draws_the_frame(ns, run_dir, capsys):
    import matplotlib.pyplot as plt
    plt.close("all")
    ns["show_results"](run_dir)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == list(ns["MATCH_COLUMNS"])
    assert out[1].split()[:5] == ["walk", "3", "match", "G1", "0.41234"]
    assert out[3].split() == ["walk-2", "1", "too_short", "too_few_silhouettes"]
    image = plt.gcf().axes[0].images[0].get_array()
    assert image.shape == (H, W, 3)
    assert abs(float(np.asarray(image)[..., 2].mean()) - 100) < 10
    plt.close("all")



# ---------------------------------------------------------------------------------------------------------------
# repository, install and sample helpers


def test_repo_url_unset_says_what_to_set_in_one_line(ns, tmp_path):
    assert ns["REPO_URL"] == ""  # the one parameter, left for the user
    with pytest.raises(ValueError) as err:
        ns["repo_source"]("", [])
    assert "REPO_URL" in str(err.value) and "\n" not in str(err.value)
    assert ns["repo_source"](" https://example.org/a.git ", []) == ("clone", "https://example.org/a.git")
    assert ns["repo_source"]("", [tmp_path / "allinone-main.zip"]) == ("zip", tmp_path / "allinone-main.zip")


def test_install_fits_the_runtime(ns):
    """The package from the repository folder (pip install .), and on a GPU PaddlePaddle's CUDA build in place of
    the CPU one; every line a whole pip command (what `%pip {cmd}` runs)."""
    cpu, gpu = ns["install_commands"](False), ns["install_commands"](True)
    assert cpu == ["install -q ."]
    assert gpu[0] == cpu[0] and any("paddlepaddle-gpu" in c for c in gpu) and any("uninstall" in c for c in gpu)
    from pip._internal.commands import commands_dict
    for line in gpu:
        assert shlex.split(line)[0] in commands_dict, line


def test_the_installed_command_is_found(ns, tmp_path):
    """allinone on PATH, else the script pip put beside the notebook's Python; quoted for a `!` line."""
    assert ns["allinone_command"](which=lambda name: f"/opt/my env/bin/{name}") == "'/opt/my env/bin/allinone'"
    assert ns["allinone_command"](which=lambda name: None, python=str(tmp_path / "bin" / "python3")) == \
        shlex.quote(str(tmp_path / "bin" / "allinone"))


def test_samples_are_fetched_once(ns, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("demo1.mp4", "demo2.mp4"):
        _write_video(src / name, blue_step=10)
    urls = {"gallery": (src / "demo1.mp4").as_uri(), "probe": (src / "demo2.mp4").as_uri()}
    gallery, probes = ns["fetch_samples"](urls, tmp_path / "samples")
    assert gallery.read_bytes() == (src / "demo1.mp4").read_bytes() and len(probes) == 1
    (src / "demo1.mp4").unlink()  # a second call reuses the downloaded file
    assert ns["fetch_samples"](urls, tmp_path / "samples")[0] == gallery
    assert ns["check_inputs"](gallery, probes) == (gallery, probes)


def test_video_and_report_show_inline(ns, run_dir):
    html = ns["video_html"](run_dir / "G-gal_P-walk.mp4")
    assert html.startswith("<video") and "data:video/mp4;base64," in html
    (run_dir / "report.html").write_text("<video src='G-gal_P-walk.mp4'></video><div class=\"card match\"></div>")
    page = ns["report_html"](run_dir)
    assert "data:video/mp4;base64," in page and "src='G-gal_P-walk.mp4'" not in page and "card match" in page
