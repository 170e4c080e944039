"""python main.py bench --watch N --minutes M: the watch service on N looped loopback cameras for M minutes.

ffmpeg serves the sample walks looped without end as N HTTP MPEG-TS streams on the loopback (one per camera, the
videos taken in turn); one person is enrolled from demo1; ``python main.py watch`` runs in its own process with the
test models (as a user starts it), a real Mosquitto broker receiving its events where Mosquitto is installed. The
service's RSS is sampled every few seconds from /proc. Reported, per camera: frames analysed per second, frames
dropped, decision latency, sightings stored; for the service: RSS over time (the largest sample per minute) and its
spread after the warm-up (from the cameras' start plus a fifth of the run, at least one minute, to the end of the
run, not counting the finishing); and whether any sighting was lost: every final event on MQTT is a database row
and every row had its final event. The models' own cost is measured after the service has ended, in this process,
on demo4's frames (the detector on each frame, the segmenter on its person): the frames per second the models alone
could analyse on this machine, the yardstick for the cameras' rates; and what batching the N cameras' work through
the segmenter and the gait model would save (batching_gain)."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from allinone.commands.soak import free_port, rss_mb

# each video with the rotation its camera is given (demo5 is stored on its side: the config key rotate turns it)
VIDEOS = (("demo4.mp4", 0), ("demo2.mp4", 0), ("demo5.mp4", 90), ("demo1.mp4", 0))
WARM_UP_MIN_S = 60.0


def _video(i: int) -> tuple[str, int]:
    """Camera i's video and rotation: the list again from its start past its end."""
    return VIDEOS[i % len(VIDEOS)]


def _serve(video: Path, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/{name}.ts"
    proc = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video), "-an",
                             "-c", "copy", "-f", "mpegts", "-listen", "1", url], stderr=subprocess.DEVNULL)
    return proc, url


class _Mqtt:
    """Mosquitto on a free loopback port and a subscriber keeping the final events (camera, track); nothing where
    Mosquitto is not installed."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        self.finals: set[tuple[str, int]] = set()
        self.proc = self.client = None
        if exe is None:
            return
        self.port = free_port()
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._subscribe()

    def _subscribe(self) -> None:
        import paho.mqtt.client as mqtt
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("bench/events", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.connect("127.0.0.1", self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.1)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("the bench could not subscribe to mosquitto")

    def _on_message(self, client, userdata, msg) -> None:
        e = json.loads(msg.payload)
        if e.get("final") and e.get("status") != "too_short":
            self.finals.add((e["stream"], int(e["track"])))

    @property
    def url(self) -> str | None:
        return f"mqtt://127.0.0.1:{self.port}/bench" if self.proc is not None else None

    def close(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def _config(tmp: Path, urls: list[str], gallery: Path, mqtt_url: str | None) -> Path:
    cfg = tmp / "watch.yaml"
    lines = [f"gallery: {gallery}", f"output: {tmp / 'out'}", "threshold: 1.0e+9",
             f"listen: 127.0.0.1:{free_port()}", "cameras:"]
    lines += [f"  - {{name: cam{i + 1}, source: '{u}', rotate: {_video(i)[1]}}}" for i, u in enumerate(urls)]
    if mqtt_url:
        lines.append(f"mqtt: {mqtt_url}")
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _sample(proc: subprocess.Popen, sessions: Path, sample_s: float) -> tuple[list, float | None]:
    """RSS samples (seconds since start, MB) until the service exits; when its cameras started (its session's
    first events file appeared: models loaded, streams opened)."""
    t0, started, samples = time.monotonic(), None, []
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if started is None and any(sessions.glob("*/events-*.jsonl")):
            started = time.monotonic() - t0
        if rss is not None:
            samples.append((time.monotonic() - t0, rss))
        time.sleep(sample_s)
    return samples, started


def _rss_summary(samples: list, started: float | None, minutes: float) -> dict:
    started = started or 0.0
    warm = started + max(WARM_UP_MIN_S, 0.2 * minutes * 60)
    after = [r for t, r in samples if warm <= t <= started + minutes * 60]
    per_minute: dict[int, float] = {}
    for t, r in samples:
        per_minute[int(t // 60)] = max(per_minute.get(int(t // 60), 0.0), r)
    out = {"samples": len(samples), "cameras_started_s": round(started, 1), "warm_up_until_s": round(warm, 1),
           "rss_mb_per_minute_max": {str(k): round(v, 1) for k, v in sorted(per_minute.items())}}
    if after:
        lo, hi = min(after), max(after)
        out["rss_after_warm_up_mb"] = {"min": round(lo, 1), "max": round(hi, 1), "spread": round((hi - lo) / lo, 4),
                                       "first": round(after[0], 1), "last": round(after[-1], 1)}
    return out


def _cameras(out: Path) -> tuple[dict, set]:
    """Per camera: the session's live figures and its sightings; every stored (camera, track)."""
    session = max((out / "sessions").iterdir())
    live = json.loads((session / "run.json").read_text())["live"]
    with sqlite3.connect(out / "sightings.db") as con:
        rows = con.execute("SELECT camera, track FROM sightings").fetchall()
    cams = {}
    for name, s in sorted(live.items()):
        cams[name] = {"frames_analysed": s["frames"], "fps": s["fps"], "frames_dropped": s["frames_dropped"],
                      "wall_s": s["wall_s"], "latency_s": s["latency_s"],
                      "sightings": sum(1 for c, _ in rows if c == name)}
    return cams, {(c, int(t)) for c, t in rows}


def models_alone_fps(shared: Path, frames: int = 60) -> dict:
    """Frames per second the detector and the segmenter alone analyse on demo4 (one walker), in this process."""
    import cv2

    from allinone.config import DetectConfig, SegmentConfig
    from allinone.detect import YoloxOnnxDetector
    from allinone.segment.crop import crop_batch
    from allinone.segment.onnx import OnnxSegmenter
    det = YoloxOnnxDetector(shared / "weights/yolox_nano.onnx", DetectConfig(), "cpu")
    seg = OnnxSegmenter(shared / "weights/pphumanseg_onnx_model.onnx", "cpu")
    cap = cv2.VideoCapture(str(shared / "fixtures/videos/demo4.mp4"))
    imgs = [f for ok, f in iter(cap.read, (False, None)) if ok]  # its walker is in view from about frame 30
    cap.release()
    imgs = imgs[::max(1, len(imgs) // frames)][:frames]
    sc = SegmentConfig()
    t_det = t_seg = 0.0
    for img in imgs:
        t0 = time.perf_counter()
        d = det(img)
        t_det += time.perf_counter() - t0
        if len(d.xyxy):
            crops = crop_batch(img, d.xyxy[:1], sc.box_pad, seg.input_size, sc.canvas_value)
            t0 = time.perf_counter()
            seg(crops)
            t_seg += time.perf_counter() - t0
    n = len(imgs)
    return {"frames": n, "detect_ms": round(1000 * t_det / n, 2), "segment_ms": round(1000 * t_seg / n, 2),
            "fps": round(n / (t_det + t_seg), 2)}


def _best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best


def batching_gain(shared: Path, k: int, repeat: int = 10) -> dict:
    """What taking k cameras' work through a model as one batch would save on this machine: the segmenter on k
    people's crops and GaitBase (random weights: the same cost) on k windows of 30 silhouettes, each one call per
    camera vs one call for all (the fastest of ``repeat``). The shared YOLOX exports take one frame per run (their
    raw head is reshaped for a batch of 1), so frames cannot be batched through them."""
    import cv2
    import numpy as np
    import torch

    from allinone.config import DetectConfig, SegmentConfig
    from allinone.detect import YoloxOnnxDetector
    from allinone.gait.gaitbase import GaitBase
    from allinone.segment.crop import crop_batch
    from allinone.segment.onnx import OnnxSegmenter
    det = YoloxOnnxDetector(shared / "weights/yolox_nano.onnx", DetectConfig(), "cpu")
    seg = OnnxSegmenter(shared / "weights/pphumanseg_onnx_model.onnx", "cpu")
    cap = cv2.VideoCapture(str(shared / "fixtures/videos/demo4.mp4"))
    crops = []
    while len(crops) < k:
        ok, img = cap.read()
        if not ok:
            break
        d = det(img)
        if len(d.xyxy):
            sc = SegmentConfig()
            crops.append(crop_batch(img, d.xyxy[:1], sc.box_pad, seg.input_size, sc.canvas_value)[0])
    cap.release()
    crops = np.stack(crops)
    one = _best_ms(lambda: [seg(crops[i:i + 1]) for i in range(len(crops))], repeat)
    together = _best_ms(lambda: seg(crops), repeat)
    torch.manual_seed(0)
    model = GaitBase(class_num=200).eval()
    sils = torch.rand(k, 30, 64, 44)
    with torch.inference_mode():
        g_one = _best_ms(lambda: [model.embed(sils[i:i + 1]) for i in range(k)], repeat)
        g_together = _best_ms(lambda: model.embed(sils), repeat)
    return {"k": len(crops), "threads": torch.get_num_threads(),
            "segment_ms": {"one_per_call": round(one, 2), "batched": round(together, 2),
                           "saved": round(1 - together / one, 3)},
            "gait_ms": {"one_per_call": round(g_one, 2), "batched": round(g_together, 2),
                        "saved": round(1 - g_together / g_one, 3)}}


def watch_bench(n: int, minutes: float, shared: Path, gait: str, main_py: Path, sample_s: float = 5.0) -> dict:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is needed to serve the cameras (apt-get install ffmpeg)")
    videos = shared / "fixtures/videos"
    with tempfile.TemporaryDirectory(prefix="allinone-watch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        models = ["--detector", str(shared / "weights/yolox_nano.onnx"),
                  "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--gait-model", gait]
        gallery = tmp / "people.sqlite"
        subprocess.run([sys.executable, str(main_py), "enroll", str(videos / "demo1.mp4"), "--name", "Ann",
                        "--gallery-db", str(gallery), "--quiet", *models], check=True, stdout=subprocess.DEVNULL)
        servers = [_serve(videos / _video(i)[0], f"cam{i + 1}") for i in range(n)]
        mqtt = _Mqtt(tmp)
        try:
            time.sleep(0.5)
            cfg = _config(tmp, [u for _, u in servers], gallery, mqtt.url)
            proc = subprocess.Popen([sys.executable, str(main_py), "watch", str(cfg), "--duration",
                                     str(minutes * 60), "--quiet", *models],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            samples, started = _sample(proc, tmp / "out" / "sessions", sample_s)
            err = proc.stderr.read()
            if proc.returncode != 0:
                raise RuntimeError(f"the watch service failed: {err[-800:]}")
            time.sleep(2.0)  # the last events on their way through the broker
        finally:
            mqtt.close()
            for p, _ in servers:
                p.kill()
                p.wait()
        cams, stored = _cameras(tmp / "out")
    out = {"cameras": n, "minutes": minutes, "per_camera": cams, **_rss_summary(samples, started, minutes),
           "sightings": len(stored)}
    if mqtt.proc is not None:
        out["mqtt_finals"] = len(mqtt.finals)
        out["lost"] = {"on_mqtt_not_stored": sorted(mqtt.finals - stored),
                       "stored_not_on_mqtt": sorted(stored - mqtt.finals)}
    out["models_alone"] = models_alone_fps(shared)
    if n > 1:
        out["batching"] = batching_gain(shared, n)
    total = sum(c["fps"] or 0.0 for c in cams.values())
    out["analysed_fps_total"] = round(total, 2)
    out["analysed_over_models_alone"] = round(total / out["models_alone"]["fps"], 3)
    return out


__all__ = ["batching_gain", "models_alone_fps", "watch_bench"]
