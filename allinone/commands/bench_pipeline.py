"""python main.py bench without a mode (the pipeline bench): the full pipeline on the sample videos, per-stage
times, the models' own cost on the same inputs, end-to-end frames/s, peak memory and the overhead ratio end-to-end ÷
(model inference + decoding); with a pose model, the keypoint path on the same videos. Also the pieces the other
benches share: the machine's description and a random GaitBase.

The gait model's cost does not depend on its weights, so a randomly initialised GaitBase stands in where the real
checkpoint is absent."""
from __future__ import annotations

from dataclasses import dataclass, replace
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from allinone.config import DetectConfig, GaitConfig, PoseConfig, RunConfig, SegmentConfig
from allinone.io.safe_pickle import load_data_pickle


@dataclass(frozen=True)
class PipelineBench:
    """What the pipeline bench runs: the sample videos (the first is the gallery) through the full pipeline with
    these models, each side timed ``repeat`` times."""
    shared: Path  # holds fixtures/ and weights/
    videos: tuple[Path, ...]
    segmenter: str  # which PP-HumanSeg test model: "paddle" or "onnx"
    crowd: int  # above 1: the plaza video tiled this many times side by side, one more probe
    gait_model: str  # a GaitBase checkpoint, or "" for a random one
    pose_model: Path | None  # the pose path's model; None skips the pose path
    device: str
    repeat: int  # at least 1

    @property
    def plaza(self) -> Path:
        return self.shared / "fixtures/videos/plaza_gallery_boxed.mp4"

    @property
    def seg_model(self) -> Path:
        return {"paddle": self.shared / "weights/pphumanseg_v1_lite_192x192_with_softmax",
                "onnx": self.shared / "weights/pphumanseg_onnx_model.onnx"}[self.segmenter]


def pipeline_bench(spec: PipelineBench) -> dict:
    """The pipeline's fastest wall time over the videos, its peak memory, each video's row (_video_row) and, with a
    pose model, the pose path's rows."""
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", force=True)
    from allinone.stages.build import build_stages
    from allinone.io.devices import resolve_device

    with tempfile.TemporaryDirectory(prefix="allinone-bench-") as tmp:
        config = _bench_config(spec, Path(tmp))
        wall, runs = _timed_runs(config, spec.repeat)
        peak = _peak_rss_mb()
        device = resolve_device(spec.device)
        stages, config = build_stages(config, device)
        rows = []
        for i, entry in enumerate(runs[0].manifest["videos"]):
            # each video's fastest pipeline run (first pass + videos) and the models' fastest run on its inputs
            tm = min((r.manifest["videos"][i]["timings_s"] for r in runs),
                     key=lambda t: t.get("total", 0.0) + t.get("render", 0.0))
            all_costs = [_model_costs(runs[0].run_dir, entry, config, stages) for _ in range(spec.repeat)]
            rows.append(_video_row(entry, tm, {k: min(c[k] for c in all_costs) for k in all_costs[0]}))
    total_frames = sum(r["frames"] for r in rows)
    report = {"machine": machine_line(), "cpu": cpu_name(), "device": device, "segmenter": spec.segmenter,
              "wall_s": round(wall, 2), "repeat": spec.repeat,
              "frames": total_frames, "peak_rss_mb": round(peak, 1), "videos": rows}
    if spec.pose_model is not None:
        report["pose"] = _pose_path(config, spec.shared, spec.pose_model, spec.repeat)
    return report


def _bench_config(spec: PipelineBench, tmp: Path) -> RunConfig:
    """The run's configuration, its crowd video and random gait checkpoint (when asked for) made in ``tmp``."""
    vids = list(spec.videos)
    if spec.crowd > 1:
        vids.append(tile_video(spec.plaza, tmp / f"plaza_x{spec.crowd}_side_by_side.mp4", spec.crowd))
    gait = spec.gait_model or str(random_gaitbase(tmp))
    return RunConfig(gallery=vids[0], probes=tuple(vids[1:]), output=tmp / "out", name="bench",
                     device=spec.device, quiet=True, download=False, save_silhouettes="png",
                     detect=DetectConfig(model=str(spec.shared / "weights/yolox_nano.onnx")),
                     segment=SegmentConfig(model=str(spec.seg_model)), gait=GaitConfig(model=gait))


def _timed_runs(config: RunConfig, repeat: int) -> tuple[float, list]:
    """The whole run ``repeat`` times -> (the fastest one's wall seconds, every run's result)."""
    from allinone.commands.run import run

    walls, runs = [], []
    for k in range(repeat):
        t0 = time.perf_counter()
        runs.append(run(replace(config, name=f"bench{k}")))
        walls.append(time.perf_counter() - t0)
    return min(walls), runs


def _video_row(entry: dict, tm: dict, costs: dict) -> dict:
    """One video's report row from its manifest entry, its fastest run's stage seconds ``tm`` and the models'
    fastest seconds alone on its inputs (_model_costs)."""
    first_pass = tm.get("total", 0.0)  # tracks are embedded inside the streamed pass (total includes it)
    e2e = first_pass + tm.get("render", 0.0)
    # the videos' share of the frame's time: the second pass, and the tracked video drawn (and queued for its
    # encoder thread) inside the first
    video_s = tm.get("render", 0.0) + tm.get("draw", 0.0)
    model = costs["decode"] + costs["detect"] + costs["segment"] + costs["gait"]
    n = entry["frames"]
    return {
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
    }


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


def markdown(r: dict) -> str:
    """The console report of pipeline_bench's numbers."""
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


def tile_video(src: Path, out: Path, k: int) -> Path:
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


def random_gaitbase(folder: Path) -> Path:
    """A randomly initialised GaitBase checkpoint in ``folder`` (its cost is the real one's)."""
    import torch

    from allinone.gait.checkpoint import save_gaitbase_checkpoint
    from allinone.gait.gaitbase import GaitBase
    torch.manual_seed(0)
    return save_gaitbase_checkpoint(GaitBase(class_num=20000 // 100), folder / "GaitBase_random.pt")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (what lscpu shows), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """Architecture, cores and Python version."""
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
