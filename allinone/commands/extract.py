"""python main.py extract VIDEOS... | --list FILE --out DATASET [--engine local|ray]: many videos → a gait dataset.

The first pass of a run (detect → track → quality filter → segment → OpenGait alignment), without gait models, over
many videos, into OpenGait's layout, which OpenGait's loaders and ``evaluate`` read as they are:

    DATASET/<sequence id>/<type>/<view>/<sequence id>.pkl     uint8 [T, 64, 64] (or [T, 64, 44] with --cut44)

One sequence per track with at least --min-frames silhouettes; sequence id ``<video>-<track:03d>``, type the video's
name, view ``000`` (an unknown viewpoint). ``manifest.parquet`` has one row per sequence (source video, track, frame
range, frames kept, silhouettes dropped by reason); ``videos.jsonl`` one line per video (done or failed, with the
error). A re-run skips finished videos and retries failed ones; a video that fails is recorded and does not stop the
batch; a video's sequences are written under DATASET/.partial/ and moved into place only when the video has
finished, so a partly written sequence never appears.

Engines: ``local`` (the default) runs a worker process per CPU core (or one per GPU), each loading the models once;
``ray`` runs the same per-video task on Ray actors (models loaded once per actor; a GPU share per actor where there
are GPUs), on a local Ray or an existing cluster (--ray-address), the driver writing results as they finish.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

from allinone.errors import UserError, first_line

log = logging.getLogger(__name__)

STATUS = "videos.jsonl"
MANIFEST = "manifest.parquet"
PARTIAL = ".partial"


def video_ids(paths: list[Path]) -> list[str]:
    """A dataset-safe, unique name per video: its stem, with a short hash of its path where two stems collide."""
    import hashlib
    stems = [re.sub(r"[^\w.-]", "_", p.stem) or "video" for p in paths]
    out = []
    for p, s in zip(paths, stems):
        if stems.count(s) > 1:
            s = f"{s}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:6]}"
        out.append(s)
    return out


class ExtractWorker:
    """Built once per worker with the detection and segmentation models; one call per video."""

    def __init__(self, config, device: str, out: str, min_frames: int, cut44: bool) -> None:
        from allinone.stages.build import build_detector, build_segmenter, Stages
        self.config = config
        self.out = Path(out)
        self.min_frames = min_frames
        self.cut44 = cut44
        self.stages = Stages(build_detector(config.detect.model, config, device),
                             build_segmenter(config.segment.model, device))

    def __call__(self, path: str, vid: str) -> dict:
        """Process one video; returns its status line (with its sequences' manifest rows)."""
        t0 = time.perf_counter()
        try:
            rows = self._extract(Path(path), vid)
            return {"video": path, "id": vid, "status": "done", "sequences": len(rows), "rows": rows,
                    "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as exc:  # recorded for the user; the batch goes on
            log.debug("extract %s failed:\n%s", path, traceback.format_exc())
            return {"video": path, "id": vid, "status": "failed", "error": f"{type(exc).__name__}: "
                    f"{first_line(exc)}", "seconds": round(time.perf_counter() - t0, 2)}

    def _extract(self, path: Path, vid: str) -> list[dict]:
        import pickle

        from allinone.io.run_folder import RunWriter
        from allinone.stages.video_pass import process_video
        from allinone.stages.rotation import choose_rotation
        from allinone.records import VideoInfo
        from allinone.io.video import VideoSource

        src = VideoSource(path)
        degrees, basis = choose_rotation(src, self.stages.detector, self.config.rotate)
        src.set_rotation(degrees)
        partial = self.out / PARTIAL
        partial.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=partial, prefix=f"{vid}-") as tmp:
            with RunWriter(tmp, "v") as writer:
                info = VideoInfo(path=path, name=vid, role="gallery", frames=src.frame_count_hint, fps=src.fps,
                                 width=src.width, height=src.height, rotation=degrees, rotation_basis=basis)
                result = process_video(src, info, self.config, self.stages, writer)
                staged, rows = [], []
                for tid, tr in result.tracks.items():
                    if tr.n_silhouettes < self.min_frames or "silhouettes_pkl" not in tr.files:
                        continue
                    seq = f"{vid}-{tid:03d}"
                    with open(writer.dir / tr.files["silhouettes_pkl"], "rb") as fh:
                        sils = pickle.load(fh)
                    if self.cut44:
                        sils = sils[:, :, 10:-10].copy()  # GaitLU-1M's form: the 64x44 the models see
                    folder = Path(tmp) / "seqs" / seq / vid / "000"
                    folder.mkdir(parents=True)
                    with open(folder / f"{seq}.pkl", "wb") as fh:
                        pickle.dump(sils, fh)
                    staged.append(seq)
                    rows.append({"sequence": seq, "type": vid, "view": "000", "source_video": str(path),
                                 "track": tid, "first_frame": tr.first_frame + 1, "last_frame": tr.last_frame + 1,
                                 "frames": tr.n_frames, "frames_kept": tr.n_silhouettes,
                                 **{f"dropped_{k}": int(v) for k, v in tr.dropped.items()},
                                 "shape": list(sils.shape), "rotation": degrees})
                writer.finalize({"video": str(path)})  # the scratch run folder; removed with tmp
            for seq in staged:  # whole sequences appear at once
                target = self.out / seq
                if target.exists():
                    shutil.rmtree(target)
                os.replace(Path(tmp) / "seqs" / seq, target)
        return rows


# ------------------------------------------------------------------------------------------------ engines

_WORKER: ExtractWorker | None = None


def _init_local(*args) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = ExtractWorker(*args)


def _run_local(path: str, vid: str) -> dict:
    assert _WORKER is not None
    return _WORKER(path, vid)


def run_local(todo: list[tuple[str, str]], worker_args: tuple, workers: int):
    """Yield each video's status as it finishes; ``workers`` processes, models loaded once in each."""
    if workers <= 1:
        worker = ExtractWorker(*worker_args)
        for path, vid in todo:
            yield worker(path, vid)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    ctx = multiprocessing.get_context("spawn")  # no inherited threads or model state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_local,
                             initargs=worker_args) as pool:
        futures = [pool.submit(_run_local, path, vid) for path, vid in todo]
        for f in as_completed(futures):
            yield f.result()


def run_ray(todo: list[tuple[str, str]], worker_args: tuple, workers: int, address: str | None, gpus: int):
    """The same per-video task on Ray actors (models loaded once per actor), results streamed as they finish."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs the ray package (pip install ray)") from None
    from ray.util import ActorPool
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"num_cpus": workers}))
        except Exception as exc:
            raise UserError(f"cannot reach the Ray cluster {address or '(local)'} ({first_line(exc)})") from None
        started = True
    try:
        share = (gpus / workers) if gpus else 0
        actor = ray.remote(num_cpus=1, num_gpus=share)(ExtractWorker)
        pool = ActorPool([actor.remote(*worker_args) for _ in range(workers)])
        yield from pool.map_unordered(lambda a, item: a.__call__.remote(*item), todo)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------------ driver

def _read_status(out: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    f = out / STATUS
    if f.is_file():
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["video"]] = rec
    return done


def _write_manifest(out: Path, status: dict[str, dict]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [r for rec in status.values() if rec.get("status") == "done" for r in rec.get("rows", [])]
    rows.sort(key=lambda r: r["sequence"])
    tmp = out / f".{MANIFEST}.tmp"
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({"sequence": pa.array([], pa.string())}), tmp)
    os.replace(tmp, out / MANIFEST)
    return len(rows)


def extract(videos: list[Path], out: Path, config, *, engine: str = "local", workers: int = 0,
            ray_address: str | None = None, min_frames: int = 10, cut44: bool = False, quiet: bool = False) -> dict:
    from tqdm import tqdm

    from allinone.stages.build import resolve_models
    from allinone.io.devices import resolve_device
    for v in videos:
        if not v.is_file():
            raise UserError("video not found" if not v.exists() else "not a file", v)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise UserError("dataset folder is not writable", out)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)  # leftovers of an interrupted run: never a sequence
    status = _read_status(out)
    ids = video_ids(videos)
    todo = [(str(v), i) for v, i in zip(videos, ids) if status.get(str(v), {}).get("status") != "done"]
    skipped = len(videos) - len(todo)
    if skipped:
        log.info("%d video(s) already done, skipped", skipped)
    device = resolve_device(config.device)
    config = resolve_models(replace(config, track_only=False, save_silhouettes="pkl"), gait=False)
    gpus = 0
    if device.startswith("cuda"):
        import torch
        gpus = torch.cuda.device_count()
    workers = workers or (gpus or os.cpu_count() or 1)
    args = (config, device, str(out), min_frames, cut44)
    stream = run_ray(todo, args, workers, ray_address, gpus) if engine == "ray" else run_local(todo, args, workers)
    t0 = time.perf_counter()
    n_seq = 0
    with open(out / STATUS, "a", encoding="utf-8") as fh, \
            tqdm(total=len(todo), desc=f"extract ({engine})", unit="video", disable=quiet) as bar:
        for rec in stream:
            status[rec["video"]] = rec
            fh.write(json.dumps(rec, allow_nan=False) + "\n")
            fh.flush()
            n_seq += rec.get("sequences", 0)
            if rec["status"] != "done":
                log.warning("%s: failed (%s); recorded, the batch goes on", rec["video"], rec.get("error"))
            bar.update(1)
            bar.set_postfix_str(f"{n_seq} sequences")
    wall = time.perf_counter() - t0
    total = _write_manifest(out, status)
    failed = [v for v, r in status.items() if r.get("status") != "done" and v in {str(x) for x in videos}]
    return {"videos": len(videos), "processed": len(todo), "skipped": skipped, "failed": failed,
            "sequences_new": n_seq, "sequences_total": total, "wall_s": round(wall, 2),
            "sequences_per_s": round(n_seq / wall, 3) if wall > 0 and n_seq else None, "engine": engine,
            "workers": workers}


def extract_command(argv: list[str]) -> int:
    from allinone.commands.args import positive_int
    from allinone.commands.args import add_model_args, config_from_args
    p = argparse.ArgumentParser(prog="python main.py extract",
                                description="Turn many videos into an OpenGait-format silhouette dataset.")
    p.add_argument("videos", nargs="*", type=Path, metavar="VIDEO")
    p.add_argument("--list", type=Path, default=None, metavar="FILE", help="a text file of video paths, one a line")
    p.add_argument("--out", type=Path, required=True, metavar="DATASET")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="worker processes / actors (default: one per GPU, else one per CPU core)")
    p.add_argument("--cut44", action="store_true", help="store [T, 64, 44] (GaitLU-1M's form) instead of 64x64")
    add_model_args(p)
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    videos = list(args.videos)
    try:
        if args.list is not None:
            if not args.list.is_file():
                raise UserError("video list not found", args.list)
            videos += [Path(x.strip()) for x in args.list.read_text(encoding="utf-8").splitlines()
                       if x.strip() and not x.strip().startswith("#")]
        if not videos:
            raise UserError("no videos: give VIDEO paths or --list FILE")
        ns = argparse.Namespace(**{**vars(args), "gallery": videos[0], "probe": [], "output": args.out,
                                   "name": None, "gallery_db": None})
        config = config_from_args(ns)
        summary = extract(videos, args.out, config, engine=args.engine, workers=args.workers or 0,
                          ray_address=args.ray_address, min_frames=args.min_frames, cut44=args.cut44,
                          quiet=args.quiet)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, allow_nan=False))
    return 1 if summary["failed"] else 0
