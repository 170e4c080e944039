"""python main.py bench: the full pipeline on the sample videos, per-stage times, the models' own cost on the same
inputs, end-to-end frames/s, peak memory and the overhead ratio end-to-end ÷ (model inference + decoding).

The gait model's cost does not depend on its weights, so a randomly initialised GaitBase stands in where the real
checkpoint is absent."""
from __future__ import annotations

from dataclasses import replace
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from allinone.commands.args import Parser
from allinone.config import DetectConfig, GaitConfig, PoseConfig, RunConfig, SegmentConfig
from allinone.io.safe_pickle import load_data_pickle
from allinone.errors import print_error

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_VIDEOS = ("demo1.mp4", "demo2.mp4", "demo4.mp4", "plaza_gallery_boxed.mp4")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _random_gaitbase(folder: Path) -> Path:
    import torch

    from allinone.gait.checkpoint import save_gaitbase_checkpoint
    from allinone.gait.gaitbase import GaitBase
    torch.manual_seed(0)
    return save_gaitbase_checkpoint(GaitBase(class_num=20000 // 100), folder / "GaitBase_random.pt")


def _model_costs(run_dir: Path, entry: dict, config: RunConfig, stages) -> dict[str, float]:
    """Seconds the models (and the decoder) alone take on this video's inputs: every frame decoded into memory,
    the detector on each frame, the segmenter on the same crops in the same batches, the gait model on the same
    silhouette sequences."""
    from allinone.segment.crop import crop_batch
    from allinone.io.video import VideoSource
    src = VideoSource(entry["path"])
    t0 = time.perf_counter()
    frames = list(src.frames(prefetch=1))
    decode = time.perf_counter() - t0

    t0 = time.perf_counter()
    for f in frames:
        stages.detector(f)
    detect = time.perf_counter() - t0

    # the crops the run segmented: its PNG file names are the frames of each track
    boxes: dict[int, list[tuple[int, np.ndarray]]] = {}
    for line in (run_dir / entry["tracks_file"]).read_text().splitlines():
        f, tid, x, y, w, h = line.split(",")[:6]
        boxes.setdefault(int(f) - 1, []).append(
            (int(tid), np.array([float(x), float(y), float(x) + float(w), float(y) + float(h)], np.float32)))
    segmented = {(int(t["id"]), int(p.stem) - 1) for t in entry["tracks"] if t.get("silhouettes_png_dir")
                 for p in (run_dir / t["silhouettes_png_dir"]).glob("*.png")}
    crops = []
    for index in sorted(boxes):
        sel = [b for tid, b in boxes[index] if (tid, index) in segmented]
        if sel:
            crops.extend(crop_batch(frames[index], np.stack(sel), config.segment.box_pad,
                                    stages.segmenter.input_size, config.segment.canvas_value))
    del frames
    bs = config.segment.batch_size
    t0 = time.perf_counter()
    for i in range(0, len(crops), bs):
        stages.segmenter(np.stack(crops[i:i + bs]))
    segment = time.perf_counter() - t0

    seqs = []
    for t in entry["tracks"]:
        if t.get("silhouettes_pkl"):
            seqs.append(load_data_pickle(run_dir / t["silhouettes_pkl"]))
    t0 = time.perf_counter()
    if seqs:
        stages.embedder(seqs)
    gait = time.perf_counter() - t0
    return {"decode": decode, "detect": detect, "segment": segment, "gait": gait, "n_crops": len(crops),
            "n_sil": int(sum(len(s) for s in seqs))}


def bench_command(argv: list[str] | None = None) -> int:
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
    p.add_argument("--hard", action="store_true", help="with --search: add occluded, scaled and near-duplicate "
                                                       "queries")
    p.add_argument("--metric", choices=["euc", "cos"], default="euc", help="with --search: the distance")
    p.add_argument("--queries", type=int, default=100, help="with --search: noisy queries (plus the hard ones)")
    p.add_argument("--encode", action="store_true",
                   help="instead: the result video's colour conversion and H.264 encoding by variant (presets, CRF, "
                        "conversion) on demo4's first frames: time, CPU, size and PSNR, within one run")
    args = p.parse_args(argv)
    if args.encode:
        from allinone.commands.bench_encode import encode_bench, markdown
        report = encode_bench(args.shared / "fixtures/videos/demo4.mp4")
        print(markdown(report))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        return 0
    if args.decisions or args.live_soak:
        report = _decisions_or_soak(args)
        print(json.dumps(report, indent=2, allow_nan=False))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        return 0
    if args.search:
        from allinone.gallery.search_bench import benchmark
        with tempfile.TemporaryDirectory(prefix="allinone-search-") as tmp:
            report = benchmark(args.search, tmp, queries=args.queries, hard=args.hard, metric=args.metric)
        print(json.dumps(report, indent=2, allow_nan=False))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        return 0
    if not (args.shared / "fixtures/videos").is_dir():
        print_error(f"{args.shared}: no test material here (fixtures/videos); give --shared DIR")
        return 2
    if args.memory:
        return _memory_bench(args)
    plaza = args.shared / "fixtures/videos/plaza_gallery_boxed.mp4"
    if args.crowd > 1 and not plaza.is_file():  # the crowd is made of it: say so before any model loads
        print_error(f"{plaza}: no such video (--crowd tiles it side by side)")
        return 2

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", force=True)
    from allinone.stages.build import build_stages
    from allinone.commands.run import run
    from allinone.io.devices import resolve_device

    shared = args.shared
    vids = [shared / "fixtures/videos" / v for v in args.videos]
    seg = {"paddle": shared / "weights/pphumanseg_v1_lite_192x192_with_softmax",
           "onnx": shared / "weights/pphumanseg_onnx_model.onnx"}[args.seg]
    with tempfile.TemporaryDirectory(prefix="allinone-bench-") as tmp:
        tmp = Path(tmp)
        if args.crowd > 1:
            vids.append(_tile_video(plaza, tmp / f"plaza_x{args.crowd}_side_by_side.mp4", args.crowd))
        gait = args.gait_model or str(_random_gaitbase(tmp))
        config = RunConfig(gallery=vids[0], probes=tuple(vids[1:]), output=tmp / "out", name="bench",
                           device=args.device, quiet=True, download=False, save_silhouettes="png",
                           detect=DetectConfig(model=str(shared / "weights/yolox_nano.onnx")),
                           segment=SegmentConfig(model=str(seg)), gait=GaitConfig(model=gait))
        repeat = max(1, args.repeat)
        walls, runs = [], []
        for k in range(repeat):
            t0 = time.perf_counter()
            runs.append(run(replace(config, name=f"bench{k}")))
            walls.append(time.perf_counter() - t0)
        wall = min(walls)
        peak = _peak_rss_mb()
        device = resolve_device(args.device)
        stages, config = build_stages(config, device)
        rows = []
        result_dir = runs[0].run_dir
        for i, entry in enumerate(runs[0].manifest["videos"]):
            # each video's fastest pipeline run (first pass + videos) and the models' fastest run on its inputs
            tm = min((r.manifest["videos"][i]["timings_s"] for r in runs),
                     key=lambda t: t.get("total", 0.0) + t.get("render", 0.0))
            all_costs = [_model_costs(result_dir, entry, config, stages) for _ in range(repeat)]
            costs = {k: min(c[k] for c in all_costs) for k in all_costs[0]}
            first_pass = tm.get("total", 0.0)  # tracks are embedded inside the streamed pass (total includes it)
            e2e = first_pass + tm.get("render", 0.0)
            # the videos' share of the frame's time: the second pass, and the tracked video drawn (and queued for
            # its encoder thread) inside the first
            video_s = tm.get("render", 0.0) + tm.get("draw", 0.0)
            model = costs["decode"] + costs["detect"] + costs["segment"] + costs["gait"]
            n = entry["frames"]
            rows.append({
                "video": entry["name"], "size": f"{entry['width']}x{entry['height']}", "frames": n,
                "tracks": len(entry["tracks"]), "crops": costs["n_crops"],
                "stage_ms_per_frame": {k: round(1000 * v / n, 2) for k, v in tm.items()},
                "model_ms": {"decode/frame": round(1000 * costs["decode"] / n, 2),
                             "detect/frame": round(1000 * costs["detect"] / n, 2),
                             "segment/crop": round(1000 * costs["segment"] / max(costs["n_crops"], 1), 2),
                             "gait/silhouette": round(1000 * costs["gait"] / max(costs["n_sil"], 1), 2)},
                "fps_first_pass": round(n / first_pass, 1), "fps_with_render": round(n / e2e, 1),
                "model_fps": round(n / model, 1), "ratio": round(first_pass / model, 3),
                "render_share": round(video_s / e2e, 3) if e2e > 0 else 0.0,
                "with_render_vs_models": round(model / e2e, 3) if e2e > 0 else 0.0,
            })
    total_frames = sum(r["frames"] for r in rows)
    report = {"machine": _machine(), "cpu": _cpu_name(), "device": device, "segmenter": args.seg, "wall_s": round(wall, 2),
              "repeat": repeat,
              "frames": total_frames, "peak_rss_mb": round(peak, 1), "videos": rows}
    pose_model = shared / "weights/movenet_singlepose_lightning_int8.tflite" if args.pose_model is None \
        else (None if args.pose_model == "none" else Path(args.pose_model))
    if pose_model is not None:
        report["pose"] = _pose_path(config, shared, pose_model, repeat)
    print(_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return 0


def _pose_path(config: RunConfig, shared: Path, pose_model: Path, repeat: int) -> dict:
    """The keypoint path on the same videos: detect, track, the pose model on every tracked person in every frame,
    GaitGraph on the keypoints (no segmentation). Each video's fastest of ``repeat`` runs: the pose stage's ms per
    crop and per frame, and the path's frames per second (first pass and with the result videos)."""
    from allinone.commands.run import run

    gaitgraph = shared / "weights/gaitgraph_resgcn-n39-r8_coco_seq_60.pth"
    cfg = replace(config, save_silhouettes="none", gait=GaitConfig(model=str(gaitgraph)),
                  pose=PoseConfig(model=str(pose_model)), match=replace(config.match, threshold=0.2))
    runs = [run(replace(cfg, name=f"bench-pose{k}")) for k in range(max(1, repeat))]
    rows = []
    for i, entry in enumerate(runs[0].manifest["videos"]):
        tm = min((r.manifest["videos"][i]["timings_s"] for r in runs), key=lambda t: t.get("total", 0.0))
        n, crops = entry["frames"], sum(t.get("n_poses", 0) for t in entry["tracks"])
        pose_s = tm.get("pose", 0.0) + tm.get("pose_crop", 0.0)
        rows.append({"video": entry["name"], "frames": n, "crops": crops,
                     "pose_ms_per_crop": round(1000 * tm.get("pose", 0.0) / max(crops, 1), 2),
                     "crop_ms_per_crop": round(1000 * tm.get("pose_crop", 0.0) / max(crops, 1), 2),
                     "pose_ms_per_frame": round(1000 * pose_s / n, 2),
                     "gait_ms_per_frame": round(1000 * tm.get("embed", 0.0) / n, 2),
                     "fps_first_pass": round(n / tm["total"], 1) if tm.get("total") else None,
                     "fps_with_render": round(n / (tm.get("total", 0.0) + tm.get("render", 0.0)), 1)})
    return {"model": pose_model.name, "gait": gaitgraph.name, "videos": rows}


def _cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (what lscpu shows), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def _decisions_or_soak(args) -> dict:
    machine = f"{_machine()}, {_cpu_name()}"
    if args.decisions:
        from allinone.decide.scale import benchmark
        return {"machine": machine, **benchmark(args.decisions, args.identities, dense=args.dense)}
    from allinone.commands.soak import live_soak
    with tempfile.TemporaryDirectory(prefix="allinone-soak-ckpt-") as tmp:
        gait = args.gait_model or str(_random_gaitbase(Path(tmp)))
        return {"machine": machine, **live_soak(args.live_soak, args.shared, gait, REPO / "main.py",
                                                args.soak_segment)}


def _markdown(r: dict) -> str:
    lines = [f"machine: {r['machine']}, {r['cpu']}; device: {r['device']}; segmenter: {r['segmenter']}; "
             f"fastest of {r['repeat']} runs each side; "
             f"run wall time {r['wall_s']} s for {r['frames']} frames (models loading included); "
             f"peak memory {r['peak_rss_mb']} MB", "",
             "| video | frames | tracks | crops | decode | detect | track | crop+seg | align+png | gait | render |"
             " e2e fps | +render fps | models-only fps | ratio | render share | +render / models |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in r["videos"]:
        s = v["stage_ms_per_frame"]
        lines.append(
            f"| {v['video']} ({v['size']}) | {v['frames']} | {v['tracks']} | {v['crops']} | "
            f"{s.get('decode_wait', 0):.1f} | {s.get('detect', 0):.1f} | {s.get('track', 0):.1f} | "
            f"{s.get('crop', 0) + s.get('segment', 0):.1f} | {s.get('align', 0) + s.get('write', 0):.1f} | "
            f"{s.get('embed', 0):.1f} | {s.get('render', 0) + s.get('draw', 0):.1f} | {v['fps_first_pass']} | "
            f"{v['fps_with_render']} | {v['model_fps']} | {v['ratio']} | {v['render_share']:.1%} | "
            f"{v['with_render_vs_models']} |")
    lines += ["", "stage columns: ms per video frame inside the pipeline (decode = time spent waiting for the "
              "decoder thread; render = the result video's second pass plus the tracked video drawn in the first). "
              "render share = render ÷ (first pass + second pass); +render / models = models-only time ÷ the "
              "pipeline's time with the videos (1 = at the models' own cost). Models alone on the same inputs:", "",
              "| video | decode ms/frame | detect ms/frame | segment ms/crop | gait ms/silhouette |", "|---|---|---|---|---|"]
    for v in r["videos"]:
        m = v["model_ms"]
        lines.append(f"| {v['video']} | {m['decode/frame']} | {m['detect/frame']} | {m['segment/crop']} | "
                     f"{m['gait/silhouette']} |")
    if "pose" in r:
        p = r["pose"]
        lines += ["", f"pose path ({p['model']} keypoints → {p['gait']}, no segmentation), fastest run of each video:",
                  "", "| video | frames | crops | pose ms/crop | crop ms/crop | pose ms/frame | gait ms/frame | "
                  "e2e fps | +render fps |", "|---|---|---|---|---|---|---|---|---|"]
        for v in p["videos"]:
            lines.append(f"| {v['video']} | {v['frames']} | {v['crops']} | {v['pose_ms_per_crop']} | "
                         f"{v['crop_ms_per_crop']} | {v['pose_ms_per_frame']} | {v['gait_ms_per_frame']} | "
                         f"{v['fps_first_pass']} | {v['fps_with_render']} |")
    return "\n".join(lines)


def _tile_video(src: Path, out: Path, k: int) -> Path:
    """``src`` repeated ``k`` times side by side (more people in one frame)."""
    import cv2
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    vw = None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        row = np.concatenate([f] * k, axis=1)
        if vw is None:
            vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, row.shape[1::-1])
        vw.write(row)
    cap.release()
    vw.release()
    return out


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
        gait = args.gait_model or str(_random_gaitbase(tmp))
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
    print(f"machine: {_machine()}, {_cpu_name()}; peak RSS of the "
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
