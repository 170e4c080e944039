"""Live streams, for real on the loopback: an HTTP MPEG-TS stream served by ffmpeg and an RTSP stream served by
GStreamer's RTSP server (from a file ffmpeg made), the RTSP server killed and restarted mid-stream.

The system packages come from .ci/run (ffmpeg, GStreamer's RTSP server and its Python bindings); where they are
missing on a developer's machine the tests say so and skip."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from allinone.io.video import read_frame_count
from tests.conftest import REPO
from tests.test_cli import _assert_user_error, run_main

SYSTEM_PYTHON = "/usr/bin/python3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models(shared, ckpt):
    return ["--detector", str(shared / "weights/yolox_nano.onnx"),
            "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--gait-model", str(ckpt)]


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"system packages missing here: {', '.join(missing)} (.ci/run installs them)")


def _gst_ok() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer")
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


def _check_live_run(run: Path, stream: str) -> dict:
    m = json.loads((run / "run.json").read_text())
    v = next(x for x in m["videos"] if x["name"] == stream)
    live = m["live"][stream]
    assert live["frames"] > 30 and live["fps"] > 0 and live["latency_s"]["n"] == live["events"] > 0
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert len(events) == live["events"]
    for e in events:
        assert set(e) >= {"wall_time", "frame", "track", "identity", "distance", "status", "reason", "latency_s"}
        assert e["status"] in ("match", "unknown") and (e["identity"] is None) == (e["status"] != "match")
        assert e["track"] in {t["id"] for t in v["tracks"]}
    assert [e["frame"] for e in events] == sorted(e["frame"] for e in events)
    # the result video was written as the stream played: one frame per frame processed, and it decodes
    assert read_frame_count(run / v["result_video"]) == live["frames"] == v["frames"]
    assert m["matches"] and {r["probe_track"] for r in m["matches"]} == {t["id"] for t in v["tracks"]}
    return m


def test_http_mpegts_stream_from_ffmpeg(tmp_path, shared, random_gaitbase):
    _need("ffmpeg")
    port = _free_port()
    server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "3", "-i",
                               str(shared / "fixtures/videos/demo4.mp4"), "-c", "copy", "-f", "mpegts",
                               "-listen", "1", f"http://127.0.0.1:{port}/walk.ts"], stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe",
                       f"http://127.0.0.1:{port}/walk.ts", "--threshold", "1e9", "--reconnect", "2", "--duration", "12",
                       "--output", str(tmp_path), "--name", "h", "--quiet", *_models(shared, random_gaitbase))
    finally:
        server.kill()
        server.wait()
    assert res.returncode == 0, res.stderr
    m = _check_live_run(tmp_path / "h", "walk")
    # threshold 1e9 and one gallery person: everyone with enough silhouettes takes them, unless someone seen at the
    # same time took them first
    assert {(r["status"], r["reason"]) for r in m["matches"]} <= {("match", None), ("unknown", "taken"),
                                                                  ("too_short", "too_few_silhouettes")}
    assert any(r["status"] == "match" for r in m["matches"])


def test_rtsp_stream_survives_a_server_restart(tmp_path, shared, random_gaitbase):
    _need("ffmpeg")
    if not _gst_ok():
        pytest.skip("GStreamer's RTSP server and python3-gi are missing here (.ci/run installs them)")
    media = tmp_path / "walk.ts"  # ffmpeg feeds the server: the walk four times over (28 s), H.264 in MPEG-TS
    subprocess.run(["ffmpeg", "-loglevel", "error", "-stream_loop", "3", "-i",
                    str(shared / "fixtures/videos/demo4.mp4"), "-an",
                    "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "mpegts", str(media)], check=True)
    port = _free_port()

    def serve() -> subprocess.Popen:
        p = subprocess.Popen([SYSTEM_PYTHON, str(REPO / "tests/servers/rtsp_server.py"), str(port), "cam",
                              str(media)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    server = serve()
    client = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--gallery",
                               str(shared / "fixtures/videos/demo1.mp4"), "--probe", f"rtsp://127.0.0.1:{port}/cam",
                               "--threshold", "1e9", "--reconnect", "6", "--duration", "16", "--output",
                               str(tmp_path), "--name", "r", *_models(shared, random_gaitbase)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        mot = tmp_path / f".r.partial-{client.pid}" / "tracks" / "cam.txt"
        deadline = time.monotonic() + 120
        while not (mot.exists() and mot.stat().st_size > 0):  # people on the stream are being tracked
            assert client.poll() is None and time.monotonic() < deadline, client.stderr.read()
            time.sleep(0.2)
        server.send_signal(signal.SIGKILL)
        server.wait()
        time.sleep(1.0)
        server = serve()
        out, err = client.communicate(timeout=180)
    finally:
        server.kill()
        server.wait()
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    assert "reconnected" in err
    m = _check_live_run(tmp_path / "r", "cam")
    # the stream is longer than the run: only the restart cut it (reopening can take a second try while the new
    # server prerolls)
    assert 1 <= m["live"]["cam"]["reconnects"] <= 3, err


def test_a_stream_that_cannot_be_opened_is_one_line(tmp_path, shared, random_gaitbase):
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe", f"rtsp://127.0.0.1:{port}/x",
                   "--output", str(tmp_path), "--quiet", *_models(shared, random_gaitbase))
    _assert_user_error(res, f"rtsp://127.0.0.1:{port}/x", "cannot be opened")
    assert time.monotonic() - t0 < 30 and list(tmp_path.iterdir()) == []
    _assert_user_error(run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe", "webcam:97",
                                "--output", str(tmp_path), "--quiet", *_models(shared, random_gaitbase)), "webcam:97")
    res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe", "http://127.0.0.1:1/a.ts",
                   "--probe", str(shared / "fixtures/videos/demo2.mp4"), "--output", str(tmp_path), "--quiet")
    _assert_user_error(res, "one --probe")
