"""python main.py bench: the full pipeline on the sample videos, per-stage times, the models' own cost on the same
inputs, end-to-end frames/s, peak memory and the overhead ratio end-to-end ÷ (model inference + decoding).

The gait model's cost does not depend on its weights, so a randomly initialised GaitBase stands in where the real
checkpoint is absent."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from allinone.commands.args import Parser
from allinone.commands.bench_pipeline import PipelineBench, cpu_name, machine_line, markdown, pipeline_bench, \
    random_gaitbase
from allinone.errors import print_error

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_VIDEOS = ("demo1.mp4", "demo2.mp4", "demo4.mp4", "plaza_gallery_boxed.mp4")


def bench_parser() -> Parser:
    p = Parser(prog="python main.py bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder with fixtures/ and weights/")
    p.add_argument("--videos", nargs="+", default=list(DEFAULT_VIDEOS),
                   help="video file names under fixtures/videos; the first is the gallery")
    p.add_argument("--seg", choices=["paddle", "onnx"], default="paddle", help="which PP-HumanSeg test model")
    p.add_argument("--crowd", type=int, default=0, metavar="K",
                   help="also a crowd video: the 4-person plaza video K times side by side (K=3: 12 people)")
    p.add_argument("--gait-model", default="", help="a GaitBase checkpoint (default: a random one)")
    p.add_argument("--pose-model", default=None, metavar="PATH",
                   help="the pose path's model (default: MoveNet Lightning from --shared; 'none' skips the pose "
                        "path): the same videos run again with GaitGraph on its keypoints")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--repeat", type=int, default=3, metavar="K",
                   help="run the pipeline and the models alone K times each and keep each video's fastest time of "
                        "each (default 3: a 3-second clip timed once varies by a quarter between runs here)")
    p.add_argument("--memory", type=int, default=0, metavar="N",
                   help="instead: peak memory of a run on the plaza video and on it played N times over (with "
                        "gaps, so its walkers come back as new tracks), each in its own process")
    p.add_argument("--search", type=int, default=0, metavar="N",
                   help="instead: gallery search over N synthetic identities (bound index + exact measure vs "
                        "brute force: recall within the threshold, query time, memory)")
    p.add_argument("--decisions", type=int, default=0, metavar="N",
                   help="instead: the decision rule on N synthetic probe tracks over a long video (time, memory, "
                        "and the same decisions as the one-program exact solver up to 3000 tracks)")
    p.add_argument("--identities", type=int, default=500, help="with --decisions: gallery identities")
    p.add_argument("--dense", action="store_true",
                   help="with --decisions: a dense crowd (40 people in view, 10 candidates each) that the integer "
                        "program may not finish within its time limit: how it ended and its gap")
    p.add_argument("--live-soak", type=float, default=0.0, metavar="MINUTES",
                   help="instead: a live run on a looped loopback stream for MINUTES, its RSS over time")
    p.add_argument("--soak-segment", type=float, default=60.0, metavar="S", help="with --live-soak: segment length")
    p.add_argument("--watch", type=int, default=0, metavar="N",
                   help="instead: the watch service on N looped loopback cameras: per camera frames analysed per "
                        "second, dropped and decision latency; RSS over time; sightings lost (with --minutes)")
    p.add_argument("--minutes", type=float, default=2.0, metavar="M", help="with --watch: how long (default 2)")
    p.add_argument("--hard", action="store_true", help="with --search: add occluded, scaled and near-duplicate "
                                                       "queries")
    p.add_argument("--metric", choices=["euc", "cos"], default="euc", help="with --search: the distance")
    p.add_argument("--queries", type=int, default=100, help="with --search: noisy queries (plus the hard ones)")
    p.add_argument("--encode", action="store_true",
                   help="instead: the result video's colour conversion and H.264 encoding by variant (presets, CRF, "
                        "conversion) on demo4's first frames: time, CPU, size and PSNR, within one run")
    return p


def bench_command(argv: list[str] | None = None) -> int:
    args = bench_parser().parse_args(argv)
    if args.encode:
        from allinone.commands.bench_encode import encode_bench, markdown as encode_markdown
        report = encode_bench(args.shared / "fixtures/videos/demo4.mp4")
        print(encode_markdown(report))
    elif args.decisions or args.live_soak or args.watch:
        report = _decisions_or_soak(args)
        print(json.dumps(report, indent=2, allow_nan=False))
    elif args.search:
        report = _search_bench(args)
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        return _pipeline_command(args)
    _write_json(args.json, report)
    return 0


def _pipeline_command(args) -> int:
    """The default bench (or --memory): refused before any model loads when its videos are not there."""
    if not (args.shared / "fixtures/videos").is_dir():
        print_error(f"{args.shared}: no test material here (fixtures/videos); give --shared DIR")
        return 2
    if args.memory:
        return _memory_bench(args)
    spec = _pipeline_spec(args)
    if spec.crowd > 1 and not spec.plaza.is_file():  # the crowd is made of it: say so before any model loads
        print_error(f"{spec.plaza}: no such video (--crowd tiles it side by side)")
        return 2
    report = pipeline_bench(spec)
    print(markdown(report))
    _write_json(args.json, report)
    return 0


def _pipeline_spec(args) -> PipelineBench:
    shared = args.shared
    pose_model = shared / "weights/movenet_singlepose_lightning_int8.tflite" if args.pose_model is None \
        else (None if args.pose_model == "none" else Path(args.pose_model))
    return PipelineBench(shared=shared, videos=tuple(shared / "fixtures/videos" / v for v in args.videos),
                         segmenter=args.seg, crowd=args.crowd, gait_model=args.gait_model, pose_model=pose_model,
                         device=args.device, repeat=max(1, args.repeat))


def _write_json(path: Path | None, report: dict) -> None:
    if path:
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def _search_bench(args) -> dict:
    from allinone.gallery.search_bench import benchmark
    with tempfile.TemporaryDirectory(prefix="allinone-search-") as tmp:
        return benchmark(args.search, tmp, queries=args.queries, hard=args.hard, metric=args.metric)


def _decisions_or_soak(args) -> dict:
    machine = f"{machine_line()}, {cpu_name()}"
    if args.decisions:
        from allinone.decide.scale import benchmark
        return {"machine": machine, **benchmark(args.decisions, args.identities, dense=args.dense)}
    from allinone.commands.bench_watch import watch_bench
    from allinone.commands.soak import live_soak
    with tempfile.TemporaryDirectory(prefix="allinone-soak-ckpt-") as tmp:
        gait = args.gait_model or str(random_gaitbase(Path(tmp)))
        if args.watch:
            return {"machine": machine, **watch_bench(args.watch, args.minutes, args.shared, gait,
                                                      REPO / "main.py")}
        return {"machine": machine, **live_soak(args.live_soak, args.shared, gait, REPO / "main.py",
                                                args.soak_segment)}


def _loop_video(src: Path, out: Path, times: int, gap: int = 40) -> Path:
    """``src`` played ``times`` times with ``gap`` black frames between the plays."""
    import cv2
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    black = np.zeros_like(frames[0])
    for k in range(times):
        for _ in range(gap if k else 0):
            vw.write(black)
        for f in frames:
            vw.write(f)
    vw.release()
    return out


def _memory_bench(args) -> int:
    """Peak RSS of the main command on plaza x1 and x N, each in a fresh process (models loaded in both)."""
    import subprocess
    shared = args.shared
    plaza = shared / "fixtures/videos/plaza_gallery_boxed.mp4"
    rows = []
    with tempfile.TemporaryDirectory(prefix="allinone-membench-") as tmp:
        tmp = Path(tmp)
        gait = args.gait_model or str(random_gaitbase(tmp))
        for times in (1, args.memory):
            video = plaza if times == 1 else _loop_video(plaza, tmp / f"plaza_x{times}.mp4", times)
            cmd = [sys.executable, str(REPO / "main.py"), "--gallery", str(video), "--probe",
                   str(shared / "fixtures/videos/demo2.mp4"), "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_v1_lite_192x192_with_softmax"),
                   "--gait-model", gait, "--output", str(tmp / "out"), "--name", f"x{times}", "--quiet",
                   "--threshold", "1", "--device", args.device]
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            if status != 0:
                print_error(f"the run on {video.name} failed: {proc.stderr.read().decode()[-500:]}")
                return 1
            m = json.loads((tmp / "out" / f"x{times}" / "run.json").read_text())
            g = m["videos"][0]
            rows.append({"video": f"plaza x{times}", "frames": g["frames"], "tracks": len(g["tracks"]),
                         "silhouettes": sum(t.get("n_silhouettes", 0) for t in g["tracks"]),
                         "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "wall_s": round(wall, 1)})
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"machine: {machine_line()}, {cpu_name()}; peak RSS of the "
          "whole process (models loaded), each run in its own process\n")
    print("| video | frames | tracks | silhouettes | peak RSS MB | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['video']} | {r['frames']} | {r['tracks']} | {r['silhouettes']} | {r['peak_rss_mb']} | "
              f"{r['wall_s']} |")
    print(f"\npeak memory x{args.memory} / x1 = {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": round(ratio, 4)}, indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(bench_command())
