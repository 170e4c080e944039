"""python main.py bench --live-soak MINUTES: a live run held for MINUTES on a looped stream, its memory over time.

ffmpeg serves a sample walk looped without end as HTTP MPEG-TS on the loopback (as tests/commands/test_live.py
does); the main command decides it live, with the test models, in its own process, for MINUTES, with segments of
``segment_s`` seconds so that segment rolling is part of what is measured. The process's RSS is sampled every few
seconds from /proc. Reported: RSS over time (the largest sample per minute since the process started), its spread
after the warm-up (from the stream's start — its first segment file appearing, models loaded — the first fifth of the
run, at least one minute, while the first tracks fill their windows — to the end of the stream, not counting the
finishing), the segments written and the run's own live figures."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_soak(minutes: float, shared: Path, gait: str, main_py: Path, segment_s: float = 60.0,
              sample_s: float = 5.0, video: str = "demo4.mp4") -> dict:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is needed to serve the stream (apt-get install ffmpeg)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/cam.ts"
    server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                               str(shared / "fixtures/videos" / video), "-c", "copy", "-f", "mpegts", "-listen", "1",
                               url], stderr=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="allinone-soak-") as tmp:
        try:
            time.sleep(0.5)
            cmd = [sys.executable, str(main_py), "--gallery", str(shared / "fixtures/videos/demo1.mp4"), "--probe",
                   url, "--threshold", "1e9", "--duration", str(minutes * 60), "--segment", str(segment_s),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--gait-model", gait,
                   "--output", tmp, "--name", "soak", "--quiet", "--save-silhouettes", "none"]
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            first_segment = Path(tmp) / f".soak.partial-{proc.pid}" / "events-000.jsonl"
            stream_t = None  # when the stream started (models loaded): its first segment appears
            while proc.poll() is None:
                rss = rss_mb(proc.pid)
                if stream_t is None and first_segment.exists():
                    stream_t = time.monotonic() - t0
                if rss is not None:
                    samples.append((time.monotonic() - t0, rss))
                time.sleep(sample_s)
            err = proc.stderr.read()
        finally:
            server.kill()
            server.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"the live run failed: {err[-800:]}")
        m = json.loads((Path(tmp) / "soak" / "run.json").read_text())
    live = m["live"]["cam"]
    stream_t = stream_t or 0.0
    warm = stream_t + max(60.0, 0.2 * minutes * 60)
    after = [r for t, r in samples if warm <= t <= stream_t + minutes * 60]  # the finishing is not the soak
    per_minute: dict[int, float] = {}
    for t, r in samples:
        per_minute[int(t // 60)] = max(per_minute.get(int(t // 60), 0.0), r)
    out = {"minutes": minutes, "segment_s": segment_s, "samples": len(samples),
           "rss_mb_per_minute_max": {str(k): round(v, 1) for k, v in sorted(per_minute.items())},
           "stream_started_s": round(stream_t, 1), "warm_up_until_s": round(warm, 1),
           "frames": live["frames"], "frames_dropped": live["frames_dropped"],
           "fps": live["fps"], "events": live["events"], "latency_s": live["latency_s"],
           "segments": [{k: s[k] for k in ("index", "frames", "complete")} for s in live["segments"]],
           "tracks": len(m["videos"][-1]["tracks"])}
    if after:
        lo, hi = min(after), max(after)
        out["rss_after_warm_up_mb"] = {"min": round(lo, 1), "max": round(hi, 1),
                                       "spread": round((hi - lo) / lo, 4),
                                       "first": round(after[0], 1), "last": round(after[-1], 1)}
    return out


__all__ = ["live_soak"]
