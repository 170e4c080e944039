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
from tests.helpers import looped_ts_server
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


def _events(run: Path, live: dict) -> list[dict]:
    return [json.loads(x) for seg in live["segments"] for x in (run / seg["events"]).read_text().splitlines()]


def _check_live_run(run: Path, stream: str) -> dict:
    m = json.loads((run / "run.json").read_text())
    assert "status" not in m  # complete
    v = next(x for x in m["videos"] if x["name"] == stream)
    live = m["live"][stream]
    assert live["frames"] > 30 and live["fps"] > 0 and live["latency_s"]["n"] == live["events"] > 0
    events = _events(run, live)
    assert len(events) == live["events"]
    for e in events:
        assert set(e) >= {"wall_time", "frame", "track", "identity", "distance", "status", "reason", "latency_s",
                          "final"}
        assert e["status"] in ("match", "unknown") and (e["identity"] is None) == (e["status"] != "match")
        assert e["track"] in {t["id"] for t in v["tracks"]}
    assert [e["frame"] for e in events] == sorted(e["frame"] for e in events)
    # the segments cover the stream frame by frame, each file complete; the result videos were written as the
    # stream played: one frame per frame processed, and they decode
    segs = live["segments"]
    assert all(s["complete"] for s in segs) and segs[0]["first_frame"] == 1 and segs[-1]["last_frame"] == v["frames"]
    assert all(a["last_frame"] + 1 == b["first_frame"] for a, b in zip(segs, segs[1:]))
    assert v["result_videos"] == [s["result_video"] for s in segs] and v["events"] == [s["events"] for s in segs]
    assert [read_frame_count(run / s["result_video"]) for s in segs] == [s["frames"] for s in segs]
    assert sum(s["frames"] for s in segs) == live["frames"] == v["frames"]
    for s in segs:  # each MOT segment holds the rows of its own frames
        frames = {int(r.split(",")[0]) for r in (run / s["tracks_file"]).read_text().splitlines()}
        assert not frames or s["first_frame"] <= min(frames) <= max(frames) <= s["last_frame"]
    assert m["matches"] and {r["probe_track"] for r in m["matches"]} == {t["id"] for t in v["tracks"]}
    # the run's decision per track is the final event announced for it, and two tracks whose spans overlap never
    # end with one identity
    final = {e["track"]: e for e in events if e["final"]}
    for r in m["matches"]:
        if r["probe_track"] in final:
            assert (final[r["probe_track"]]["status"], final[r["probe_track"]]["identity"]) == \
                (r["status"], r["identity"])
    span = {t["id"]: (t["first_frame"], t["last_frame"]) for t in v["tracks"]}
    matched = [(r["probe_track"], r["identity"]) for r in m["matches"] if r["status"] == "match"]
    for a, x in matched:
        for b, y in matched:
            if a < b and x == y:
                assert span[a][1] < span[b][0] or span[b][1] < span[a][0]
    return m


def test_http_mpegts_stream_from_ffmpeg(tmp_path, shared, random_gaitbase):
    _need("ffmpeg")
    with looped_ts_server(shared / "fixtures/videos/demo4.mp4") as url:
        res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe",
                       url, "--threshold", "1e9", "--reconnect", "2", "--duration", "12",
                       "--segment", "4", "--output", str(tmp_path), "--name", "h", "--quiet", *_models(shared, random_gaitbase))
    assert res.returncode == 0, res.stderr
    m = _check_live_run(tmp_path / "h", "walk")
    assert len(m["live"]["walk"]["segments"]) >= 2  # 4 s segments over a 12 s run
    # threshold 1e9 and one gallery person: everyone with enough silhouettes takes them, unless someone seen at the
    # same time took them first
    assert {(r["status"], r["reason"]) for r in m["matches"]} <= {("match", None), ("unknown", "taken"),
                                                                  ("too_short", "too_few_silhouettes")}
    assert any(r["status"] == "match" for r in m["matches"])


def test_two_cameras_are_decided_in_one_loop(tmp_path, shared, random_gaitbase):
    """One run, one set of models, two streams: each camera its own tracker, decisions, events and MOT files and
    result videos; neither starved (frames taken in turn); every final decision is the run's decision."""
    from dataclasses import replace

    from allinone.cli import build_parser
    from allinone.commands.args import config_from_args
    from allinone.runner.runner import run
    _need("ffmpeg")
    with looped_ts_server(shared / "fixtures/videos/demo4.mp4") as a, \
            looped_ts_server(shared / "fixtures/videos/demo4.mp4") as b:
        args = build_parser().parse_args(["--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe", a,
                                          "--probe", b, "--threshold", "1e9", "--reconnect", "2", "--duration", "14",
                                          "--output", str(tmp_path), "--name", "two", "--quiet",
                                          *_models(shared, random_gaitbase)])
        config = config_from_args(args)
        # decisions soon, even with two cameras sharing a slow machine
        result = run(replace(config, live=replace(config.live, window_min=10, step=10)))
    m, run_dir = result.manifest, result.run_dir
    assert set(m["live"]) == {"walk", "walk-2"}
    frames = [m["live"][c]["frames"] for c in ("walk", "walk-2")]
    assert min(frames) > 20 and min(frames) >= 0.5 * max(frames)  # taken in turn: neither camera starved
    files = set()
    for cam in ("walk", "walk-2"):
        live = m["live"][cam]
        v = next(x for x in m["videos"] if x["name"] == cam)
        assert [s["events"] for s in live["segments"]] == [f"events-{cam}-000.jsonl"]
        assert sum(s["frames"] for s in live["segments"]) == live["frames"] == v["frames"]
        assert read_frame_count(run_dir / v["result_video"]) == v["frames"]
        files |= {v["result_video"], v["tracks_file"], *v["events"]}
        events = _events(run_dir, live)
        assert events and all(e["stream"] == cam for e in events) and len(events) == live["events"]
        final = {e["track"]: e for e in events if e["final"]}
        rows = [r for r in m["matches"] if r["probe_video"] == cam]
        assert {r["probe_track"] for r in rows} == {t["id"] for t in v["tracks"]}
        for r in rows:
            if r["probe_track"] in final:
                assert (final[r["probe_track"]]["status"], final[r["probe_track"]]["identity"]) == \
                    (r["status"], r["identity"])
    assert len(files) == 6  # no camera wrote over the other's files


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
        mot = tmp_path / f".r.partial-{client.pid}" / "tracks" / "cam-000.txt"
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


def test_a_failure_at_the_end_leaves_the_live_run_incomplete_not_deleted(tmp_path, shared, random_gaitbase):
    # the report cannot be written (a folder sits where report.html goes): the run fails after the stream, and the
    # folder stays with its events, MOT rows and result video, run.json saying "incomplete" and why
    _need("ffmpeg")
    with looped_ts_server(shared / "fixtures/videos/demo4.mp4") as url:
        client = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--gallery",
                                   str(shared / "fixtures/videos/demo1.mp4"), "--probe",
                                   url, "--threshold", "1e9", "--reconnect", "2",
                                   "--duration", "8", "--output", str(tmp_path), "--name", "x", "--quiet",
                                   *_models(shared, random_gaitbase)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        partial = tmp_path / f".x.partial-{client.pid}"
        deadline = time.monotonic() + 120
        while not (partial / "events-000.jsonl").exists():
            assert client.poll() is None and time.monotonic() < deadline, client.stderr.read()
            time.sleep(0.2)
        (partial / "report.html").mkdir()
        _, err = client.communicate(timeout=180)
    assert client.returncode != 0
    run = tmp_path / "x"
    m = json.loads((run / "run.json").read_text())
    assert m["status"] == "incomplete" and "report.html" in m["error"], m
    live = m["live"]["walk"]
    assert live["frames"] > 30 and live["segments"] and all(s["complete"] for s in live["segments"])
    assert len(_events(run, live)) == live["events"]
    assert (run / live["segments"][0]["tracks_file"]).read_text().strip()  # people were tracked: MOT rows kept
    assert read_frame_count(run / live["segments"][0]["result_video"]) == live["segments"][0]["frames"] > 0
    assert str(run) in err


def test_a_live_stream_with_gaitgraph_decides_on_keypoints(tmp_path, shared):
    """The live path with a keypoint gait model: MoveNet poses per frame, GaitGraph on each track's latest window."""
    _need("ffmpeg")
    with looped_ts_server(shared / "fixtures/videos/demo1.mp4") as url:
        res = run_main("--gallery", str(shared / "fixtures/videos/demo2.mp4"), "--probe", url, "--threshold", "0.2",
                       "--reconnect", "2", "--duration", "10", "--output", str(tmp_path), "--name", "g", "--quiet",
                       "--detector", str(shared / "weights/yolox_nano.onnx"),
                       "--gait-model", str(shared / "weights/gaitgraph_resgcn-n39-r8_coco_seq_60.pth"),
                       "--pose-model", str(shared / "weights/movenet_singlepose_lightning_int8.tflite"))
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "g/run.json").read_text())
    live = m["live"]["walk"]
    events = _events(tmp_path / "g", live)
    # a smoke test: on a loaded machine frames are dropped to stay live, so tracks may be too short to match; every
    # track has poses and every decision a GaitGraph distance (unit vectors: between 0 and 2)
    assert events and all(e["distance"] is not None and 0 < e["distance"] < 2 for e in events), events
    tracks = m["videos"][-1]["tracks"]
    assert tracks and all(t.get("n_poses", 0) >= 1 for t in tracks)
