"""python main.py bench --encode: what a result video costs, by variant, within one run.

The first frames of a video are decoded into memory once; then each variant converts BGR → yuv420p and encodes
them to H.264 (every variant over the same frames, the variants interleaved and repeated, the fastest repeat kept, so
that other load on the machine falls on all of them alike). Per variant: ms a frame of the calling thread and of
the process's CPU (all threads), the file's size and its PSNR against the input frames (decoded back with OpenCV).
Also the cost of drawing the boxes and labels of a frame (``results.render.draw``) with 1 and 12 people.
"""
from __future__ import annotations

import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

# (name, preset, crf, tune, conversion): the old default first
VARIANTS = (
    ("veryfast crf23, swscale conversion (before)", "veryfast", "23", None, "swscale"),
    ("veryfast crf23", "veryfast", "23", None, "opencv"),
    ("superfast crf26", "superfast", "26", None, "opencv"),
    ("superfast crf23", "superfast", "23", None, "opencv"),
    ("ultrafast crf28 (default)", "ultrafast", "28", None, "opencv"),
    ("veryfast crf23 zerolatency", "veryfast", "23", "zerolatency", "opencv"),
)


def _encode(frames: list[np.ndarray], fps: float, out: Path, preset: str, crf: str, tune: str | None,
            conversion: str) -> tuple[float, float]:
    """Wall and CPU seconds to convert and encode ``frames`` into ``out`` with libx264."""
    import av
    h, w = frames[0].shape[:2]
    t0, c0 = time.perf_counter(), time.process_time()
    with av.open(str(out), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(float(fps)).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": preset, "crf": crf, **({"tune": tune} if tune else {})}
        for f in frames:
            if conversion == "swscale":
                vf = av.VideoFrame.from_ndarray(f, format="bgr24").reformat(format="yuv420p")
            else:
                vf = av.VideoFrame.from_ndarray(cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return time.perf_counter() - t0, time.process_time() - c0


def _psnr(path: Path, frames: list[np.ndarray]) -> float:
    cap = cv2.VideoCapture(str(path))
    mse = []
    for ref in frames:
        ok, got = cap.read()
        if not ok:
            break
        mse.append(float(np.mean((got.astype(np.float32) - ref.astype(np.float32)) ** 2)))
    cap.release()
    return float(10 * np.log10(255.0 ** 2 / max(np.mean(mse), 1e-12)))


def _draw_ms(frame: np.ndarray, people: int, repeats: int = 50) -> float:
    from allinone.results.render import Box, draw, identity_color
    h, w = frame.shape[:2]
    bw = w / (people + 1)
    boxes = [Box(np.array([k * bw, h * 0.3, k * bw + bw * 0.9, h * 0.9]), identity_color(k), f"P{k} G{k} 0.0312")
             for k in range(people)]
    t0 = time.perf_counter()
    for _ in range(repeats):
        draw(frame.copy(), boxes)
    return 1000 * (time.perf_counter() - t0) / repeats


def encode_bench(video: Path, n_frames: int = 120, repeats: int = 2) -> dict:
    from allinone.io.encoders import encoder_opens
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < n_frames:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    n = len(frames)
    best: dict[str, tuple[float, float]] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="allinone-encbench-") as tmp:
        for _ in range(repeats):
            for name, preset, crf, tune, conv in VARIANTS:
                wall, cpu = _encode(frames, fps, Path(tmp) / f"{preset}-{crf}-{tune}-{conv}.mp4", preset, crf, tune,
                                    conv)
                old = best.get(name)
                best[name] = (min(wall, old[0]), min(cpu, old[1])) if old else (wall, cpu)
        for name, preset, crf, tune, conv in VARIANTS:
            out = Path(tmp) / f"{preset}-{crf}-{tune}-{conv}.mp4"
            rows.append({"variant": name, "wall_ms_per_frame": round(1000 * best[name][0] / n, 2),
                         "cpu_ms_per_frame": round(1000 * best[name][1] / n, 2),
                         "size_kib": round(os.path.getsize(out) / 1024, 1), "psnr_db": round(_psnr(out, frames), 2)})
    base = rows[0]
    for r in rows:
        r["cpu_vs_before"] = round(r["cpu_ms_per_frame"] / base["cpu_ms_per_frame"], 3)
        r["size_vs_before"] = round(r["size_kib"] / base["size_kib"], 3)
    return {"video": video.name, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "frames": n,
            "nvenc": encoder_opens("h264_nvenc"), "rows": rows,
            "draw_ms": {"1 person": round(_draw_ms(frames[0], 1), 3), "12 people": round(_draw_ms(frames[0], 12), 3)}}


def markdown(r: dict) -> str:
    lines = [f"{r['video']} ({r['size']}), first {r['frames']} frames; h264_nvenc opens here: {r['nvenc']}", "",
             "| variant | ms/frame (wall) | ms/frame (CPU, all threads) | CPU vs before | size KiB | size vs before |"
             " PSNR dB |", "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['variant']} | {x['wall_ms_per_frame']} | {x['cpu_ms_per_frame']} | {x['cpu_vs_before']} | "
                     f"{x['size_kib']} | {x['size_vs_before']} | {x['psnr_db']} |")
    lines += ["", "drawing boxes and labels, ms a frame: " + ", ".join(f"{k} {v}" for k, v in r["draw_ms"].items())]
    return "\n".join(lines)


__all__ = ["VARIANTS", "encode_bench", "markdown"]
