"""The sinks in the product, with --mqtt (a real Mosquitto) and --webhook (a local HTTP server): a file run of the
sample videos (every final decision arrives once, in order, equal field by field to run.json's row), a live run
over the loopback (every event of its events files, in order), and bad addresses refused in one line before any
model loads."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import looped_ts_server
from tests.sinks.servers import Broker, Subscriber, Web
from tests.test_cli import _assert_user_error, run_main

# what every output of a decision carries (the README's "Outputs that plug in"); a run's 1:N search results carry
# no LR keys (an LR is of one designated comparison)
EVENT_KEYS = {"stream", "track", "status", "identity", "distance", "reason", "first_frame", "last_frame",
              "silhouettes", "final", "wall_time"}


@pytest.fixture(scope="module")
def sinks_run(tmp_path_factory, shared, random_gaitbase):
    tmp = tmp_path_factory.mktemp("sinks")
    broker = Broker(tmp).start()
    sub = Subscriber(broker.port, ["gait/events", "gait/+/events", "gait/available"])
    web = Web("ok")
    try:
        res = run_main("--gallery", str(shared / "fixtures/videos/demo2.mp4"),
                       "--probe", str(shared / "fixtures/videos/demo1.mp4"),
                       "--detector", str(shared / "weights/yolox_nano.onnx"),
                       "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"),
                       "--gait-model", str(random_gaitbase), "--output", str(tmp / "out"), "--name", "r",
                       "--quiet", "--mqtt", f"{broker.url}/gait", "--webhook", web.url)
        assert res.returncode == 0, res.stderr
        m = json.loads((tmp / "out/r/run.json").read_text())
        n = len(m["matches"])
        sub.wait_for(lambda: len(sub.on("gait/events")) >= n and len(sub.on("gait/demo1/events")) >= n, 5)
        yield m, sub, web, broker
    finally:
        sub.close()
        web.close()
        broker.stop()


def test_every_final_decision_arrives_once_in_order_as_in_run_json(sinks_run):
    m, sub, web, broker = sinks_run
    rows = m["matches"]
    assert rows and all(r["final"] is True for r in rows)
    assert all((r["stream"], r["track"]) == (r["probe_video"], r["probe_track"]) for r in rows)
    expected = [{k: r[k] for k in EVENT_KEYS} for r in rows]
    for got in (sub.on("gait/events"), sub.on("gait/demo1/events"), web.received):
        assert all(set(p) == EVENT_KEYS for p in got)
        assert got == expected  # each one once, in run.json's order, field by field
    # the span and silhouettes are the track's in run.json's videos
    tracks = {t["id"]: t for v in m["videos"] if v["name"] == "demo1" for t in v["tracks"]}
    for r in rows:
        t = tracks[r["track"]]
        assert (r["first_frame"], r["last_frame"]) == (t["first_frame"], t["last_frame"])
        assert r["silhouettes"] <= t.get("n_silhouettes", 0)
    assert m["sinks"] == {f"mqtt://127.0.0.1:{broker.port}/gait": {"sent": len(rows), "dropped": 0, "failed": 0},
                          f"webhook:{web.url}": {"sent": len(rows), "dropped": 0, "failed": 0}}
    available = [p for t, p in sub.messages if t == "gait/available"]
    assert available[0] == "online" and available[-1] == "offline"


@pytest.mark.parametrize("flag,value,words", [
    ("--mqtt", "tcp://127.0.0.1:1883/x", "scheme must be mqtt"),
    ("--mqtt", "mqtt:///x", "no host"),
    ("--mqtt", "mqtt://127.0.0.1:99999/x", "port"),
    ("--webhook", "ftp://127.0.0.1/hook", "scheme must be http or https"),
    ("--webhook", "http://:8080/hook", "no host"),
    ("--webhook", "http://127.0.0.1:port/hook", "port"),
])
def test_bad_addresses_are_one_line_before_any_model_loads(tmp_path, shared, flag, value, words):
    # the detector and gait model named do not exist: an error about them would mean models were looked at first
    res = run_main("--gallery", str(shared / "fixtures/videos/demo2.mp4"),
                   "--probe", str(shared / "fixtures/videos/demo1.mp4"), "--detector", str(tmp_path / "none.onnx"),
                   "--gait-model", str(tmp_path / "none.pt"), "--output", str(tmp_path / "out"), flag, value)
    assert res.returncode == 2
    _assert_user_error(res, "error:", flag, words)
    assert not (tmp_path / "out").exists()


def test_a_live_run_sends_every_event_of_its_events_files_in_order(tmp_path, shared, random_gaitbase):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg missing here (.ci/run installs it)")
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, ["cams/events", "cams/walk/events"])
    web = Web("ok")
    try:
        with looped_ts_server(shared / "fixtures/videos/demo4.mp4") as url:
            res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe", url,
                           "--threshold", "1e9", "--duration", "12", "--output", str(tmp_path), "--name", "live",
                           "--detector", str(shared / "weights/yolox_nano.onnx"),
                           "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"),
                           "--gait-model", str(random_gaitbase), "--quiet",
                           "--mqtt", f"{broker.url}/cams", "--webhook", web.url)
        assert res.returncode == 0, res.stderr
        m = json.loads((tmp_path / "live/run.json").read_text())
        rows = [json.loads(x) for seg in m["live"]["walk"]["segments"]
                for x in (tmp_path / "live" / seg["events"]).read_text().splitlines()]
        assert rows and all(r["stream"] == "walk" for r in rows)
        # the events file's row is the event and when in the stream it was decided (frame, latency_s)
        expected = [{k: r[k] for k in EVENT_KEYS} for r in rows]
        assert all(set(r) == EVENT_KEYS | {"frame", "latency_s"} for r in rows)
        sub.wait_for(lambda: len(sub.on("cams/walk/events")) >= len(rows), 5)
        for got in (sub.on("cams/events"), sub.on("cams/walk/events"), web.received):
            assert got == expected
        final = {r["track"]: r for r in expected if r["final"]}
        assert final and all({k: x[k] for k in EVENT_KEYS} == final[x["track"]]
                             for x in m["matches"] if x["track"] in final)
        assert all(s == {"sent": len(rows), "dropped": 0, "failed": 0} for s in m["sinks"].values())
    finally:
        sub.close()
        web.close()
        broker.stop()


def test_run_json_settings_keep_no_password_or_token_of_a_sink_address():
    from pathlib import Path

    from allinone.config import OutputsConfig, RunConfig
    cfg = RunConfig(gallery=Path("g.mp4"), probes=(Path("p.mp4"),), outputs=OutputsConfig(
        mqtt="mqtt://ann:s3cret@broker.local:1884/site", webhooks=("https://hooks.example/x?token=t0ken",)))
    settings = json.dumps(cfg.to_json())
    assert "s3cret" not in settings and "t0ken" not in settings and "ann" not in settings
    assert cfg.to_json()["outputs"]["mqtt"] == "mqtt://broker.local:1884/site"
    assert cfg.to_json()["outputs"]["webhooks"] == ["https://hooks.example/x"]
