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


# ------------------------------------------------------------------------------------------------ hostile names

HOSTILE = [  # file stems: quotes, <, &, #, %, spaces, a newline, non-Latin scripts, markup and script attempts
    """q"uo'te <img src=x onerror="document.title='pwned'"> &amp; #frag %41 %d""",
    "new\nline ' autofocus onfocus='document.body.dataset.pwned=1' x=' 名前 مرحبا Ωμέγα",
    "<svg onload=document.body.dataset.pwned=2> &lt;b&gt; 100% $x$ ?q=1",
]


def _short_clip(src: Path, dst: Path, frames: int = 40) -> Path:
    cap = cv2.VideoCapture(str(src))
    w = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 30, (360, 640))
    for _ in range(frames):
        ok, f = cap.read()
        assert ok
        w.write(cv2.resize(f, (360, 640)))
    w.release()
    return dst


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, shared, random_gaitbase):
    """One real run: a short clip as the gallery and copies of it under hostile names as the probes."""
    root = tmp_path_factory.mktemp("hostile")
    clip = _short_clip(shared / "fixtures/videos/demo2.mp4", root / "clip.mp4")
    probes = []
    for stem in HOSTILE:
        p = root / f"{stem}.mp4"
        shutil.copyfile(clip, p)
        probes += ["--probe", str(p)]
    res = run_main("--gallery", str(clip), *probes, "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"),
                   "--gait-model", str(random_gaitbase), "--threshold", "1e9", "--output", str(root / "out"),
                   "--name", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    return root / "out/r"


def test_hostile_names_stay_text_and_nothing_runs(hostile_run, tmp_path):
    m = json.loads((hostile_run / "run.json").read_text())
    assert [v["name"] for v in m["videos"] if v["role"] == "probe"] == HOSTILE
    page = (hostile_run / "report.html").read_text()
    assert not re.search(r"<[^>]*\son\w+\s*=", page)  # no tag carries an event handler (names are escaped text)
    assert 'http-equiv="Content-Security-Policy"' in page
    res = chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", (hostile_run / "report.html").as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    # nothing executed: the title and the sentinel are untouched, and no element came from a name
    assert re.search(r"<title>allinone run r</title>", dom), re.search(r"<title>.*?</title>", dom, re.S)
    assert "data-pwned" not in dom
    assert not re.search(r"<img[^>]*\bsrc=\"x\"", dom) and "<svg" not in dom
    assert not re.search(r"<[^>]*\s(on\w+|autofocus)[\s=>]", dom)  # no tag got a handler or autofocus
    # the page's own script ran (CSP let its hash through) and every result video loaded from its %-encoded URL
    status = re.search(r'data-video-status="([^"]*)"', dom)
    assert status and status.group(1) == "ok", status and status.group(1)
    assert len(re.findall(r"<video ", dom)) == len(HOSTILE)
    # every name shows as text (Chromium serialises text with &, <, > escaped)
    for stem in HOSTILE:
        shown = stem.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert f"<h2>{shown} <span" in dom, stem
    # the timelines name their video by a data attribute the one script reads, never by a name
    ids = set(re.findall(r"<video id=\"([^\"]+)\"", dom))
    assert set(re.findall(r'data-video="([^"]+)"', dom)) <= ids and ids


def test_csp_hash_is_the_scripts():
    """The policy names exactly the page's one inline script: another script text would be refused."""
    import base64
    import hashlib

    from allinone.results import page
    script = "document.title = 1;"
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in page.csp(script)
    assert "default-src 'none'" in page.csp(script) and "'unsafe-inline'" not in page.csp(script).split(
        "script-src")[1].split(";")[0]
    assert page.url("results/a b#c%d?.mp4") == "results/a%20b%23c%25d%3F.mp4"
    block = page.json_block("d", {"n": "</script><b>&"})
    assert "</script><b>" not in block.split(">", 1)[1][:-len("</script>")]
    assert json.loads(block.split(">", 1)[1][:-len("</script>")]) == {"n": "</script><b>&"}


def test_a_probe_named_gallery_keeps_its_own_pictures(tmp_path, shared, random_gaitbase):
    """--gallery-db with a probe video named gallery.mp4: the probe's pictures and the gallery file's never share a
    key or a file (they did: the probe card showed the enrolled person)."""
    from allinone.gallery.store import GalleryStore
    person = _short_clip(shared / "fixtures/videos/demo1.mp4", tmp_path / "person.mp4")
    probe = _short_clip(shared / "fixtures/videos/demo2.mp4", tmp_path / "gallery.mp4")
    models = ["--detector", str(shared / "weights/yolox_nano.onnx"),
              "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--gait-model", str(random_gaitbase)]
    db = tmp_path / "g.sqlite"
    res = run_main("enroll", str(person), "--name", "walker", "--gallery-db", str(db), "--min-frames", "5", *models,
                   "--quiet")
    assert res.returncode == 0, res.stderr
    res = run_main("--gallery-db", str(db), "--probe", str(probe), *models, "--threshold", "1e9", "--min-frames", "5",
                   "--output", str(tmp_path / "out"), "--name", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "out/r"
    m = json.loads((run / "run.json").read_text())
    track = next(t for t in m["videos"][0]["tracks"] if "gei" in t)
    ident = m["identities"][0]
    assert m["videos"][0]["name"] == "gallery" and ident["name"] == "walker"
    assert track["gei"] != ident["gei"] and track["crop"] != ident["crop"]
    with GalleryStore(db) as store:
        tid = ident["tracks"][0]["track"]
        stored_crop, stored_gei = store.pictures([tid])[tid]
    assert (run / ident["gei"]).read_bytes() == stored_gei and (run / ident["crop"]).read_bytes() == stored_crop
    assert (run / track["gei"]).read_bytes() != stored_gei  # the probe's own GEI, not overwritten
