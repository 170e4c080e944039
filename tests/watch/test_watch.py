"""The watch service end to end on the loopback: three cameras (two ffmpeg HTTP MPEG-TS streams and GStreamer's
RTSP server where it is installed) and a fourth whose address never answers, one enrolled person, a real Mosquitto
broker, a local webhook server, and a user on the review page in a real headless Chromium."""
from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from allinone.io.video import read_frame_count
from tests.commands.test_live import SYSTEM_PYTHON, _free_port, _gst_ok, _models, _need
from tests.conftest import REPO
from tests.helpers import looped_ts_server
from tests.sinks.servers import Broker, Subscriber, Web
from tests.test_cli import _assert_user_error, run_main


def _overlap(a, b) -> bool:
    return a.first_wall <= b.last_wall and b.first_wall <= a.last_wall


def _rtsp_or_ts(tmp_path: Path, video: Path):
    """A third camera: GStreamer's RTSP server where it is installed, else one more HTTP stream."""
    import contextlib
    if not _gst_ok():
        return looped_ts_server(video, loops=8)
    media = tmp_path / "yard.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-stream_loop", "8", "-i", str(video), "-an", "-c:v", "copy",
                    "-bsf:v", "h264_mp4toannexb", "-f", "mpegts", str(media)], check=True)

    @contextlib.contextmanager
    def serve():
        port = _free_port()
        p = subprocess.Popen([SYSTEM_PYTHON, str(REPO / "tests/servers/rtsp_server.py"), str(port), "yard",
                              str(media)], stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "ready"
            yield f"rtsp://127.0.0.1:{port}/yard"
        finally:
            p.kill()
            p.wait()
    return serve()


def _check_unknown_ids(rows) -> None:
    """The rule, with a threshold that links any two people: an unknown sighting takes the id of an earlier unknown
    one unless every earlier sighting of that id was seen together with it (overlapping wall time: no two cameras
    here overlap); with none left it takes a new id. The same id is never in two places at once."""
    unknown = sorted((r for r in rows if r.status == "unknown"), key=lambda r: r.id)
    assert all(r.unknown_id for r in unknown)
    seen: dict[str, list] = {}
    for r in unknown:
        free = {uid for uid, group in seen.items() if not any(_overlap(r, g) for g in group)}
        if free:
            assert r.unknown_id in free, (r, free)
        else:
            assert r.unknown_id not in seen, r
        seen.setdefault(r.unknown_id, []).append(r)


class _Reviewer(threading.Thread):
    """What a user does on the review page while the service runs, in a real headless Chromium (tests/web/cdp.py):
    show the unknown sightings until there is one, open it, play its clip, and name that person Bob with the
    page's form (all sightings of its unknown id). The camera list is read meanwhile."""

    def __init__(self, base: str, profile: Path) -> None:
        super().__init__(daemon=True)
        self.base, self.profile = base, profile
        self.enrolled: dict | None = None  # the sighting named Bob, and the last sighting id when Bob joined
        self.cameras = ""
        self.clip_played = False
        self.error: BaseException | None = None
        self.done = threading.Event()

    def _api(self, route: str):
        with urllib.request.urlopen(self.base + route, timeout=10) as r:
            return json.loads(r.read())

    def run(self) -> None:
        from tests.web.cdp import Browser
        while not self.done.wait(0.5):  # the page is up once the models have loaded
            try:
                self._api("/api/cameras")
                break
            except OSError:
                continue
        b = Browser(self.profile)
        try:
            self._review(b)
        except BaseException as exc:  # seen by the test
            self.error = exc
        finally:
            b.close()

    def _review(self, b) -> None:
        b.goto(self.base + "/")
        b.wait_for("document.body.dataset.ready === 'timeline:'")
        b.evaluate("document.getElementById('f-status').value = 'unknown'")
        first = None
        while first is None and not self.done.is_set():
            b.evaluate("document.body.dataset.ready = ''; document.getElementById('filters').requestSubmit()")
            b.wait_for("document.body.dataset.ready === 'timeline:'")
            first = b.evaluate("(document.querySelector('#timeline-rows tr') || {dataset: {}}).dataset.id")
            if first is None:
                time.sleep(1.0)
        if first is None:
            return
        self.cameras = b.evaluate("document.getElementById('camera-list').innerText")
        b.evaluate(f"document.querySelector('tr[data-id=\"{first}\"] a[href^=\"#/sighting\"]').click()")
        b.wait_for(f"document.body.dataset.ready === 'sighting:{first}'")
        b.evaluate("(() => { const v = document.getElementById('s-clip'); v.muted = true; v.play(); })()")
        self.clip_played = bool(b.wait_for("document.getElementById('s-clip').currentTime > 0.3"))
        b.evaluate("document.getElementById('e-name').value = 'Bob'; document.getElementById('e-all').checked = "
                   "true; document.getElementById('enrol').requestSubmit()")
        b.wait_for("document.body.dataset.ready === 'person:Bob'")
        self.enrolled = {"sighting": self._api(f"/api/sightings/{first}"),
                         "after": max(r["id"] for r in self._api("/api/sightings")["sightings"])}


def enrol_ann(tmp_path: Path, shared: Path, gait: Path) -> Path:
    """A gallery file with one person, Ann, enrolled from demo1 with the test models; its path."""
    db = tmp_path / "people.sqlite"
    res = run_main("enroll", str(shared / "fixtures/videos/demo1.mp4"), "--name", "Ann", "--gallery-db", str(db),
                   "--quiet", *_models(shared, gait))
    assert res.returncode == 0, res.stderr
    return db


def test_watch_three_cameras_stores_sightings_linked_across_cameras(tmp_path, shared, random_gaitbase):
    from allinone.commands.watch import watch_parser, watch_spec
    from allinone.watch.config import load_watch_config
    from allinone.watch.service import watch
    from allinone.watch.sightings import Sightings
    _need("ffmpeg")
    db = enrol_ann(tmp_path, shared, random_gaitbase)
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, ["cams/events"])
    web = Web("ok")
    video = shared / "fixtures/videos/demo4.mp4"
    try:
        # streams longer than the service runs: models load while they wait, and a slow machine reads them slowly
        with looped_ts_server(video, loops=8) as hall, looped_ts_server(video, loops=8) as corridor, \
                _rtsp_or_ts(tmp_path, video) as yard:
            cfg = tmp_path / "watch.yaml"
            port = _free_port()
            cfg.write_text(f"gallery: {db}\noutput: {tmp_path / 'out'}\nthreshold: 1.0e9\nlisten: 127.0.0.1:{port}\n"
                           f"mqtt: {broker.url}/cams\nwebhooks: [{web.url}]\ncameras:\n"
                           f"  - {{name: hall, source: '{hall}'}}\n  - {{name: corridor, source: '{corridor}'}}\n"
                           f"  - {{name: yard, source: '{yard}'}}\n"
                           f"  - {{name: gate, source: 'http://127.0.0.1:{_free_port()}/gate.ts'}}\n")
            wcfg = load_watch_config(cfg)
            args = watch_parser().parse_args([str(cfg), "--duration", "40", "--reconnect", "2", "--quiet",
                                              *_models(shared, random_gaitbase)])
            spec = watch_spec(args, wcfg)
            reviewer = _Reviewer(f"http://127.0.0.1:{port}", tmp_path / "profile")
            reviewer.start()
            # decisions soon, even with three cameras sharing a slow machine: at ~4 analysed frames/s a camera a
            # walk in demo4 gives ~10 usable silhouettes, the default minimum, so a slower run had too_short only
            result, added = watch(wcfg, replace(spec, live=replace(spec.live, window_min=5, step=10),
                                                match=replace(spec.match, min_frames=5)))
            reviewer.done.set()
            reviewer.join(30)
        assert sub.wait_for(lambda: len(sub.on("cams/events")) >= sum(
            1 for x in result.manifest["matches"] if x["status"] != "too_short"), 15)
    finally:
        sub.close()
        broker.stop()
        web.close()
    with Sightings(wcfg.sightings_path, root=wcfg.output) as store:
        rows = [store.get(s.id) for s in store.page(limit=1000)]
    assert added == len(rows) > 0
    # a camera that never answered was retried without blocking the others, and run.json says so
    assert result.manifest["live"]["gate"] == {"source": wcfg.camera("gate").source, "frames": 0, "answered": False}
    assert {r.camera for r in rows} == {"hall", "corridor", "yard"}, (  # sightings on every camera
        [(m["probe"], m["status"]) for m in result.manifest["matches"]], result.manifest["live"])
    # one identity is never decided for two cameras at one moment (no two of these cameras overlap)
    # on the review page while it ran: every camera listed; an unknown sighting opened, its clip played, and named
    # Bob with the form; the service decided with Bob from then on: a later sighting on another camera is Bob
    assert reviewer.error is None, reviewer.error
    assert all(name in reviewer.cameras for name in ("hall", "corridor", "yard", "gate"))
    assert "waiting" in reviewer.cameras  # gate never answered
    assert reviewer.clip_played and reviewer.enrolled is not None
    named, after = reviewer.enrolled["sighting"], reviewer.enrolled["after"]
    assert named["identity"] == "Bob" and named["unknown_id"]
    later = [r for r in rows if r.id > after and r.status == "match" and r.identity == "Bob"]
    assert any(r.camera != named["camera"] for r in later), [(r.id, r.camera) for r in later]
    matched = [r for r in rows if r.status == "match"]
    assert matched and {r.identity for r in matched} == {"Ann", "Bob"}
    for a in matched:
        for b in matched:
            if a.id < b.id and a.camera != b.camera and a.identity == b.identity:
                assert not _overlap(a, b), (a, b)
    _check_unknown_ids([r for r in rows if r.identity is None])  # (Bob's unknown sightings were renamed)
    for r in rows:  # its pictures, clip (a playable H.264 MP4) and embedding are stored with it
        assert r.embedding is not None and r.crop and (wcfg.output / r.crop).is_file()
        assert r.clip and read_frame_count(wcfg.output / r.clip) > 0
    # the final events that MQTT and the webhook carried are the database's rows, camera by camera
    for received in (sub.on("cams/events"), web.received):
        final = {(e["stream"], e["track"]): e for e in received if e["final"]}
        assert set(final) == {(r.camera, r.track) for r in rows}
        for r in rows:
            e = final[(r.camera, r.track)]
            assert (e["status"], e["identity"], e["reason"]) == (r.status, r.identity if r.status == "match"
                                                                 else None, r.reason)
            assert e["distance"] == pytest.approx(r.distance, abs=5e-7)  # events carry 6 decimals


def test_watch_refuses_a_bad_config_before_any_model_loads(tmp_path):
    cfg = tmp_path / "w.yaml"
    cfg.write_text("galery: people.db\noutput: out\ncameras: []\n")
    _assert_user_error(run_main("watch", str(cfg)), "galery", "gallery")
    cfg.write_text("gallery: missing.db\noutput: out\ncameras:\n  - {name: hall, source: 'rtsp://127.0.0.1:1/x'}\n")
    _assert_user_error(run_main("watch", str(cfg)), "missing.db")


def test_watch_refuses_a_bad_engine_before_any_model_loads(tmp_path, monkeypatch):
    import importlib.util

    from allinone.errors import UserError
    from allinone.watch.service import Engine
    cfg = tmp_path / "w.yaml"
    cfg.write_text("gallery: missing.db\noutput: out\ncameras:\n  - {name: hall, source: 'rtsp://127.0.0.1:1/x'}\n")
    # checked before the config's files: the line names the flag
    res = run_main("watch", str(cfg), "--address", "127.0.0.1:6379")
    _assert_user_error(res, "--address", "--engine ray")
    assert res.returncode == 2
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(UserError, match="needs the ray package"):
        Engine("ray")
