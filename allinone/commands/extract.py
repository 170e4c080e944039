"""python main.py extract VIDEOS... | --list FILE --out DATASET [--engine local|ray]: many videos → a gait dataset.

The first pass of a run (detect → track → quality filter → segment → OpenGait alignment), without gait models, over
many videos, into OpenGait's layout, which OpenGait's loaders and ``evaluate`` read as they are:

    DATASET/<sequence id>/<video id>/000/<sequence id>.pkl     uint8 [T, 64, 64] (or [T, 64, 44] with --cut44)

One sequence per track with at least --min-frames silhouettes; sequence id ``<video id>-<track:03d>``, type the video
id, view ``000`` (an unknown viewpoint). A video id is unique across every run on the dataset (its stem, or its stem
and a hash of its resolved path when the stem is taken); a source path already done is skipped, a failed one retried.

The driver alone writes the dataset, holding its lock (one driver per dataset): workers hand each video's sequences
back in memory, the driver stages them under DATASET/.partial/, moves each into place whole, then appends the video's
line to videos.jsonl (fsynced); manifest.parquet is rewritten at the end, and at the start of every run both files are
rebuilt from what is on disk (datasets/state.py). A video that fails, or is missing, is recorded and does not stop the
batch. SIGTERM, SIGHUP or Ctrl-C (all three raised as KeyboardInterrupt, cli.py): the workers are stopped, the
bookkeeping written, and the driver exits 128+signal; workers end with the driver also when it is killed
(datasets/worker.py).

Engines: ``local`` (the default) runs a worker process per CPU core (or one per GPU), each loading the models once;
``ray`` runs the same per-video task on Ray actors sized per node (datasets/ray_engine.py).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from allinone.commands.args import Parser
from allinone.datasets.state import (PARTIAL, STATUS, DatasetLock, assign_ids, clear_journal, reconcile,
                                             seq_file, write_journal, write_manifest)
from allinone.datasets.worker import failed, run_local
from allinone.errors import UserError, interrupted_exit, interrupted_line, print_error, reports_user_errors

log = logging.getLogger(__name__)


def _absolute_models(config):
    """Model files as absolute paths, so that workers elsewhere (other working directory, other node) find them."""
    def absolute(m):
        return str(Path(m).resolve()) if m and Path(m).exists() else m
    return replace(config, detect=replace(config.detect, model=absolute(config.detect.model)),
                   segment=replace(config.segment, model=absolute(config.segment.model)))


def _commit(out: Path, rec: dict) -> dict:
    """Write a finished video's sequences (staged, then each moved into place whole) and return its status line
    without the arrays. Only the driver calls this."""
    seqs = rec.pop("sequences", None) or []
    rows = []
    if rec["status"] == "done":
        stage = out / PARTIAL / rec["id"]
        shutil.rmtree(stage, ignore_errors=True)
        for row, sils in seqs:
            f = seq_file(stage, row["sequence"], rec["id"])
            f.parent.mkdir(parents=True)
            with open(f, "wb") as fh:
                pickle.dump(sils, fh)
            rows.append({**row, "node": rec.get("node"), "worker_pid": rec.get("worker_pid")})
        write_journal(out, rec, [row["sequence"] for row in rows])
        for row in rows:
            target = out / row["sequence"]
            if target.exists():
                shutil.rmtree(target)
            os.replace(stage / row["sequence"], target)
        shutil.rmtree(stage, ignore_errors=True)
        rec["sequences"] = len(rows)
        rec["rows"] = rows
    return rec


def extract(videos: list[Path], out: Path, config, *, engine: str = "local", workers: int = 0,
            ray_address: str | None = None, min_frames: int = 10, cut44: bool = False, quiet: bool = False) -> dict:
    """Extract ``videos`` into the dataset ``out`` (see the module's docstring); returns the run's summary."""
    from tqdm import tqdm

    from allinone.io.devices import resolve_device
    from allinone.io.run_folder import writable_folder
    from allinone.stages.build import resolve_models
    given = list(dict.fromkeys(Path(os.path.abspath(v)).resolve() for v in videos))  # resolved, each once
    out = Path(os.path.abspath(out))
    writable_folder(out, "dataset folder")
    gpus = 0
    if engine == "ray":
        device = config.device
        if device not in ("auto", "cpu", "cuda"):
            resolve_device(device)  # its one-line error
    else:
        device = resolve_device(config.device)
        if device.startswith("cuda"):
            import torch
            gpus = torch.cuda.device_count()
    config = _absolute_models(resolve_models(replace(config, track_only=False, save_silhouettes="pkl"),
                                             gait=False))
    with DatasetLock(out):
        recs, fixed = reconcile(out)
        ids = assign_ids(given, recs, out)
        missing = [p for p in given if not p.is_file()]
        todo = [(str(p), ids[str(p)]) for p in given
                if p.is_file() and recs.get(str(p), {}).get("status") != "done"]
        skipped = len(given) - len(todo) - len(missing)
        if skipped:
            log.info("%d video(s) already done, skipped", skipped)
        n_workers = workers or (gpus or os.cpu_count() or 1)
        if engine == "ray":
            from allinone.datasets.ray_engine import run_ray
            stream = run_ray(todo, (config, min_frames, cut44), workers or None, ray_address, device)
        else:
            stream = run_local(todo, (config, device, min_frames, cut44), n_workers)
        t0 = time.perf_counter()
        n_seq = 0
        try:
            with open(out / STATUS, "a", encoding="utf-8") as fh, \
                    tqdm(total=len(todo), desc=f"extract ({engine})", unit="video", disable=quiet) as bar:
                def record(rec: dict) -> None:
                    recs[rec["video"]] = rec
                    fh.write(json.dumps(rec, allow_nan=False) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                for p in missing:
                    record(failed(str(p), ids[str(p)], "video not found" if not p.exists() else "not a file", 0))
                    log.warning("%s: %s; recorded, the batch goes on", p, recs[str(p)]["error"])
                if todo:
                    for rec in stream:
                        rec = _commit(out, rec)
                        record(rec)
                        clear_journal(out)
                        n_seq += rec.get("sequences", 0)
                        if rec["status"] != "done":
                            log.warning("%s: failed (%s); recorded, the batch goes on", rec["video"],
                                        rec.get("error"))
                        bar.update(1)
                        bar.set_postfix_str(f"{n_seq} sequences")
        finally:
            stream.close()  # workers stopped now, also when the driver is interrupted
            total = write_manifest(out, recs)
            shutil.rmtree(out / PARTIAL, ignore_errors=True)
        wall = time.perf_counter() - t0
    failures = [str(p) for p in given if recs.get(str(p), {}).get("status") != "done"]
    return {"videos": len(given), "processed": len(todo), "skipped": skipped, "failed": failures,
            "sequences_new": n_seq, "sequences_total": total, "wall_s": round(wall, 2),
            "sequences_per_s": round(n_seq / wall, 3) if wall > 0 and n_seq else None, "engine": engine,
            "workers": n_workers if engine == "local" else (workers or "per node"), "mended": fixed}


@reports_user_errors
def extract_command(argv: list[str]) -> int:
    from allinone.commands.args import positive_int
    from allinone.commands.args import add_model_args, spec_from_args
    p = Parser(prog="python main.py extract",
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
        config = spec_from_args(args, gallery=videos[0], output=args.out)
        summary = extract(videos, args.out, config, engine=args.engine, workers=args.workers or 0,
                          ray_address=args.ray_address, min_frames=args.min_frames, cut44=args.cut44,
                          quiet=args.quiet)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (errors.Interrupted, raised the same way)
        print(interrupted_line(exc, f"{args.out}: workers stopped, the finished videos recorded; run the same "
                               "command again to go on"), file=sys.stderr)
        return interrupted_exit(exc)
    print(json.dumps(summary, allow_nan=False))
    if summary["failed"]:
        print_error(f"{args.out}: {summary['failed']} of {summary['videos']} video(s) failed (each is in "
                    "videos.jsonl with its error; run the same command again to retry them)")
        return 1
    return 0
