"""The run as a user sees it: H.264 result videos and report.html opened in a real headless Chromium (Debian's
package; .ci/run installs it). The embedded videos must load without a media error, and a screenshot must show the
page with its person cards."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_cli import run_main

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed here (.ci/run installs it)")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared, random_gaitbase):
    out = tmp_path_factory.mktemp("report")
    v = shared / "fixtures/videos"
    res = run_main("--gallery", str(v / "demo1.mp4"), "--probe", str(v / "demo4.mp4"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"),
                   "--gait-model", str(random_gaitbase), "--threshold", "1e9", "--output", str(out), "--name", "r",
                   "--quiet")
    assert res.returncode == 0, res.stderr
    return out / "r"


def test_report_is_self_contained(run):
    m = json.loads((run / "run.json").read_text())
    assert m["report"] == "report.html"
    page = (run / "report.html").read_text()
    # nothing is fetched from the network: every picture inline, the only files referenced are the result videos
    assert not re.search(r"""(src|href)=['"]https?://""", page)
    refs = set(re.findall(r"""src=['"]([^'"]+)['"]""", page))
    assert {r for r in refs if not r.startswith("data:")} == {v["result_video"] for v in m["videos"]
                                                              if v.get("result_video")}
    assert page.count("class=\"card ") == len(m["matches"])
    assert (run / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_chromium_plays_the_videos_and_shows_the_cards(run, tmp_path):
    res = chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", (run / "report.html").as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    status = re.search(r'data-video-status="([^"]*)"', res.stdout)
    assert status and status.group(1) == "ok", status and status.group(1)  # H.264 decoded, no media error
    m = json.loads((run / "run.json").read_text())
    assert len(re.findall(r'<div class="card (match|unknown|too_short)"', res.stdout)) == len(m["matches"]) > 0
    shot = tmp_path / "report.png"
    res = chromium(tmp_path, "--window-size=1280,1400", f"--screenshot={shot}", (run / "report.html").as_uri())
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1400, 1280)
    assert img.std() > 20  # not a blank page
    # the cards' left borders: green for a match, red for an unknown (threshold 1e9 here: matches and 'taken')
    green = np.all(np.abs(img.astype(int) - (0x37, 0x7F, 0x1A)) < 12, axis=2).sum()
    assert green > 200


def test_result_videos_are_h264_with_the_input_frames_and_fps(run, shared):
    import av
    m = json.loads((run / "run.json").read_text())
    for v in m["videos"]:
        for key in ("annotated_video", "result_video"):
            if key not in v:
                continue
            with av.open(str(run / v[key])) as c:
                s = c.streams.video[0]
                assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
                assert abs(float(s.average_rate) - v["fps"]) < 0.01
                assert sum(1 for _ in c.decode(video=0)) == v["frames"]


def test_demo5_sideways_finds_its_walkers(tmp_path, shared, random_gaitbase):
    v = shared / "fixtures/videos"
    res = run_main("--gallery", str(v / "demo5.mp4"), "--probe", str(v / "demo2.mp4"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"),
                   "--gait-model", str(random_gaitbase), "--output", str(tmp_path), "--name", "r")
    assert res.returncode == 0, res.stderr
    assert "turning it 90 degrees clockwise" in res.stderr
    m = json.loads((tmp_path / "r/run.json").read_text())
    g = m["videos"][0]
    assert g["rotation"] == {"degrees": 90, "basis": "auto"} and (g["width"], g["height"]) == (720, 1280)
    walkers = [t for t in g["tracks"] if t.get("n_silhouettes", 0) >= 10]
    assert len(walkers) == 2  # the two people who walk through; the chair at the edge is dropped at the border
    assert len(m["identities"]) >= 2
    frame = cv2.VideoCapture(str(tmp_path / "r" / g["annotated_video"])).read()[1]
    assert frame.shape[:2] == (1280, 720)  # drawn on the upright picture
    # --rotate 0 keeps it as stored: nobody is found
    res = run_main("--gallery", str(v / "demo5.mp4"), "--probe", str(v / "demo2.mp4"), "--rotate", "0",
                   "--detector", str(shared / "weights/yolox_nano.onnx"), "--track-only",
                   "--output", str(tmp_path), "--name", "r0", "--quiet")
    assert res.returncode == 0, res.stderr
    m0 = json.loads((tmp_path / "r0/run.json").read_text())
    assert m0["videos"][0]["rotation"]["basis"] == "user"
    assert sum(t["n_frames"] for t in m0["videos"][0]["tracks"]) < 20
