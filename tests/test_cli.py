"""The command as a user runs it: real videos, real YOLOX-nano weights, ByteTrack; bad input → one line, exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from allinone.io.video import read_frame_count
from tests.helpers import write_video

REPO = Path(__file__).resolve().parents[1]


def run_main(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, shared):
    out = tmp_path_factory.mktemp("out")
    res = run_main("--gallery", str(shared / "fixtures/videos/plaza_gallery_boxed.mp4"),
                   "--probe", str(shared / "fixtures/videos/demo4.mp4"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--output", str(out), "--name", "run1", "--quiet", "--track-only")
    assert res.returncode == 0, res.stderr
    return out / "run1", res


def test_tracking_run_writes_manifest_tracks_and_videos(tracked_run, shared):
    run_dir, res = tracked_run
    assert res.stdout.strip().endswith("run1")
    m = json.loads((run_dir / "run.json").read_text())
    assert m["version"] == 2 and "created" in m and "settings" in m
    assert m["weights"]["detector"]["sha256"] == \
        "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd"
    names = [v["name"] for v in m["videos"]]
    assert names == ["plaza_gallery_boxed", "demo4"]
    assert [v["role"] for v in m["videos"]] == ["gallery", "probe"]
    for v in m["videos"]:
        src = Path(v["path"])
        n_in = read_frame_count(src)
        assert v["frames"] == n_in
        assert not Path(v["tracks_file"]).is_absolute() and not Path(v["annotated_video"]).is_absolute()
        # the tracked video plays with the input's frame count and size
        vid = run_dir / v["annotated_video"]
        assert read_frame_count(vid) == n_in
        import cv2
        cap = cv2.VideoCapture(str(vid))
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == \
            (v["width"], v["height"])
        cap.release()
        # MOT rows agree with the manifest's tracks
        rows = [line.split(",") for line in (run_dir / v["tracks_file"]).read_text().splitlines()]
        assert all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] for r in rows)
        per_id: dict[int, list[int]] = {}
        for r in rows:
            per_id.setdefault(int(r[1]), []).append(int(r[0]))
        assert {t["id"]: t["n_frames"] for t in v["tracks"]} == {k: len(f) for k, f in per_id.items()}
        for t in v["tracks"]:
            assert t["first_frame"] == min(per_id[t["id"]]) >= 1
            assert t["last_frame"] == max(per_id[t["id"]]) <= v["frames"]
        if v["tracks"]:
            assert min(t["id"] for t in v["tracks"]) == 1  # ids start at 1 in every video


def test_plaza_walkers_end_as_four_long_tracks(tracked_run):
    run_dir, _ = tracked_run
    m = json.loads((run_dir / "run.json").read_text())
    plaza = m["videos"][0]
    long_tracks = [t for t in plaza["tracks"] if t["n_frames"] >= plaza["frames"] / 2]
    assert len(long_tracks) == 4, [(t["id"], t["n_frames"]) for t in plaza["tracks"]]


def test_no_partial_folder_is_left(tracked_run):
    run_dir, _ = tracked_run
    assert [p.name for p in run_dir.parent.iterdir()] == ["run1"]


def test_same_stem_inputs_do_not_collide(tmp_path, shared):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_video(a / "clip.mp4", 6)
    write_video(b / "clip.mp4", 5, seed=1)
    res = run_main("--gallery", str(a / "clip.mp4"), "--probe", str(b / "clip.mp4"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--output", str(tmp_path / "out"), "--name", "r", "--quiet", "--track-only")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "out/r/run.json").read_text())
    assert [v["name"] for v in m["videos"]] == ["clip", "clip-2"]
    assert [v["frames"] for v in m["videos"]] == [6, 5]
    files = {v["annotated_video"] for v in m["videos"]} | {v["tracks_file"] for v in m["videos"]}
    assert len(files) == 4 and all((tmp_path / "out/r" / f).exists() for f in files)


def test_video_with_nobody_gives_a_valid_run_and_a_warning(tmp_path, shared):
    empty = write_video(tmp_path / "empty_street.mp4", 12)
    res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe", str(empty),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--output", str(tmp_path / "out"), "--name", "r", "--track-only")
    assert res.returncode == 0, res.stderr
    assert "empty_street" in res.stderr and "nobody" in res.stderr
    m = json.loads((tmp_path / "out/r/run.json").read_text())
    assert m["videos"][1]["tracks"] == [] and m["videos"][1]["frames"] == 12
    assert len(m["videos"][0]["tracks"]) >= 1


def _assert_user_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def _bad_run(tmp_path, shared, gallery=None, probe=None, detector=None, output=None):
    return run_main("--gallery", str(gallery or shared / "fixtures/videos/demo1.mp4"),
                    "--probe", str(probe or shared / "fixtures/videos/demo2.mp4"),
                    "--detector", str(detector or shared / "weights/yolox_nano.onnx"),
                    "--output", str(output or tmp_path / "out"), "--quiet", "--track-only")


def _no_run_folder(tmp_path) -> bool:
    out = tmp_path / "out"
    return not out.exists() or list(out.iterdir()) == []


def test_missing_video(tmp_path, shared):
    res = _bad_run(tmp_path, shared, probe=tmp_path / "missing.mp4")
    _assert_user_error(res, "missing.mp4", "not found")
    assert _no_run_folder(tmp_path)


def test_unreadable_video(tmp_path, shared):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 1000)
    res = _bad_run(tmp_path, shared, gallery=bad)
    _assert_user_error(res, "garbage.mp4")
    assert _no_run_folder(tmp_path)


def test_zero_frame_video(tmp_path, shared):
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    res = _bad_run(tmp_path, shared, probe=empty)
    _assert_user_error(res, "zero.mp4")
    assert _no_run_folder(tmp_path)


def test_unknown_detector(tmp_path, shared):
    res = _bad_run(tmp_path, shared, detector="banana.txt")
    _assert_user_error(res, "banana.txt")
    assert _no_run_folder(tmp_path)


def test_corrupt_onnx_detector(tmp_path, shared):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes((shared / "weights/yolox_nano.onnx").read_bytes()[:5000])
    res = _bad_run(tmp_path, shared, detector=bad)
    _assert_user_error(res, "broken.onnx")
    assert _no_run_folder(tmp_path)


def test_unwritable_output(tmp_path, shared):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = _bad_run(tmp_path, shared, output=blocker / "runs")
    _assert_user_error(res, "a_file")


def test_bad_flag_value_exits_nonzero_without_traceback(tmp_path, shared):
    res = run_main("--gallery", "g.mp4", "--probe", "p.mp4", "--frame-step", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--frame-step" in res.stderr


def test_flags_reach_the_config():
    from allinone.cli import build_parser
    from allinone.commands.args import config_from_args
    base = ["--gallery", "g.mp4", "--probe", "p.mp4"]
    cfg = config_from_args(build_parser().parse_args(base))
    assert (cfg.gait.arch, cfg.gait.trust_checkpoint, cfg.match.metric) == ("auto", False, "auto")
    cfg = config_from_args(build_parser().parse_args(
        [*base, "--gait-arch", "gaitgl", "--trust-checkpoint", "--metric", "cos", "--probe", "q.mp4"]))
    assert (cfg.gait.arch, cfg.gait.trust_checkpoint, cfg.match.metric) == ("gaitgl", True, "cos")
    assert cfg.probes == (Path("p.mp4"), Path("q.mp4"))


def test_unknown_gait_arch_is_refused_by_the_parser(tmp_path, shared):
    res = run_main("--gallery", "g.mp4", "--probe", "p.mp4", "--gait-arch", "gaitnet")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--gait-arch" in res.stderr


def test_whole_number_flags_check_their_range():
    import argparse

    from allinone.commands.args import int_in_range
    opset = int_in_range(13, 20)
    assert opset("13") == 13 and opset("20") == 20
    for bad in ("12", "21", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            opset(bad)
    assert int_in_range(1)("100000") == 100000
    res = run_main("export-onnx", "--gait-model", "m.pt", "--out", "m.onnx", "--opset", "21")
    assert res.returncode == 2 and "between 13 and 20" in res.stderr and "Traceback" not in res.stderr


def test_help_lists_every_subcommand_and_version_answers():
    from allinone import __version__
    from allinone.cli import SUBCOMMANDS
    res = run_main("--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    for name in SUBCOMMANDS:
        assert f"{name} " in text, name
    res = run_main("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"allinone {__version__}"


def test_bench_without_test_material_is_one_line(tmp_path):
    res = run_main("bench", "--shared", str(tmp_path / "nowhere"))
    _assert_user_error(res, "nowhere", "test material")
    assert res.returncode == 2


def test_unknown_command_says_so():
    res = run_main("frobnicate", "--probe", "x.mp4")
    assert res.returncode == 2 and "unknown command 'frobnicate'" in res.stderr and "--probe" not in \
        res.stderr.split("(")[0] and "Traceback" not in res.stderr


def test_gallery_options_before_and_after_the_action(tmp_path):
    from allinone.gallery.store import GalleryStore
    db = tmp_path / "people.sqlite"
    GalleryStore(db, create=True).close()
    for argv in (("gallery", "list", "--gallery-db", str(db)), ("gallery", "--gallery-db", str(db), "list")):
        res = run_main(*argv, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"{db}: 0 identities")
    # given after the action, a missing file is named (not the default gallery.sqlite)
    res = run_main("gallery", "rename", "a", "b", "--gallery-db", str(tmp_path / "none.sqlite"), cwd=tmp_path)
    assert res.returncode == 2 and "none.sqlite" in res.stderr


def test_quiet_silences_matplotlib_notices(tmp_path):
    """A fresh matplotlib cache folder makes matplotlib announce that it builds its font cache; --quiet keeps it
    (and matplotlib's other warnings) off the console, and without --quiet it shows."""
    import os
    code = ("import sys; from allinone import cli; cli._setup_logging(sys.argv[1] == 'quiet'); "
            "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
            "fig = plt.figure(); fig.text(0, 0, '\\u5f20', family='DejaVu Sans'); fig.canvas.draw()")
    outs = {}
    for mode in ("quiet", "loud"):
        env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / mode)}
        res = subprocess.run([sys.executable, "-c", code, mode], cwd=REPO, capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, res.stderr
        outs[mode] = res.stderr
    assert "Glyph" in outs["loud"] or "font cache" in outs["loud"]
    assert outs["quiet"] == ""
