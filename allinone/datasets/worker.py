"""The per-video work of ``extract`` and its local engine: a pool of worker processes that never outlive the driver.

``ExtractWorker`` is built once per worker with the detection and segmentation models; one call per video returns
its status line with the sequences in memory (the driver alone writes the dataset, so a worker that is killed, or
that outlives a killed driver for a moment, cannot leave anything in it).

``run_local`` runs it in ``workers`` spawned processes. Each worker dies with the driver however the driver ends:
on Linux the kernel sends it SIGKILL when its parent exits (``prctl(PR_SET_PDEATHSIG)``), and a watchdog thread
ends it within a second when its parent PID changes (other systems, or a parent gone before the guard was set); on
an exception or a signal in the driver, the pool's processes are terminated, not waited for. A worker process that
dies mid-video (killed, out of memory) breaks the pool: the videos it was running are tried once more on a fresh
pool, then recorded as failed.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from pathlib import Path

from allinone.errors import first_line

log = logging.getLogger(__name__)

ATTEMPTS = 2  # a video whose worker dies is tried this many times in all
SCRATCH_PREFIX = "allinone-extract-"  # a worker's scratch folder in its temporary folder: <prefix><pid>-*


class ExtractWorker:
    """Built once per worker with the detection and segmentation models; one call per video."""

    def __init__(self, config, device: str, min_frames: int, cut44: bool) -> None:
        from allinone.stages.build import Stages, build_detector, build_segmenter
        self.config = config
        self.min_frames = min_frames
        self.cut44 = cut44
        self.node = socket.gethostname()
        self.stages = Stages(build_detector(config.detect.model, config, device),
                             build_segmenter(config.segment.model, device))

    def __call__(self, path: str, vid: str) -> dict:
        """One video → its status line; a done one carries ``sequences``: (manifest row, uint8 array) pairs."""
        t0 = time.perf_counter()
        base = {"video": path, "id": vid, "node": self.node, "worker_pid": os.getpid()}
        try:
            seqs = self._extract(Path(path), vid)
            return {**base, "status": "done", "sequences": seqs, "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as exc:  # recorded for the user; the batch goes on
            log.debug("extract %s failed:\n%s", path, traceback.format_exc())
            return {**base, "status": "failed", "error": f"{type(exc).__name__}: {first_line(exc)}",
                    "seconds": round(time.perf_counter() - t0, 2)}

    def _extract(self, path: Path, vid: str) -> list:
        from allinone.io.run_folder import RunWriter
        from allinone.io.safe_pickle import load_data_pickle
        from allinone.io.video import VideoSource
        from allinone.records import VideoInfo
        from allinone.stages.rotation import choose_rotation
        from allinone.stages.video_pass import process_video

        src = VideoSource(path)
        degrees, basis = choose_rotation(src, self.stages.detector, self.config.rotate)
        src.set_rotation(degrees)
        out = []
        # the run writer's scratch folder on this worker's machine (never the dataset); removed when done
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
            with RunWriter(tmp, "v") as writer:
                info = VideoInfo(path=path, name=vid, role="gallery", frames=src.frame_count_hint, fps=src.fps,
                                 width=src.width, height=src.height, rotation=degrees, rotation_basis=basis)
                result = process_video(src, info, self.config, self.stages, writer)
                for tid, tr in result.tracks.items():
                    if tr.n_silhouettes < self.min_frames or "silhouettes_pkl" not in tr.files:
                        continue
                    sils = load_data_pickle(writer.dir / tr.files["silhouettes_pkl"])
                    if self.cut44:
                        sils = sils[:, :, 10:-10].copy()  # GaitLU-1M's form: the 64x44 the models see
                    seq = f"{vid}-{tid:03d}"
                    row = {"sequence": seq, "type": vid, "view": "000", "source_video": str(path), "track": tid,
                           "first_frame": tr.first_frame + 1, "last_frame": tr.last_frame + 1,
                           "frames": tr.n_frames, "frames_kept": tr.n_silhouettes,
                           **{f"dropped_{k}": int(v) for k, v in tr.dropped.items()},
                           "shape": list(sils.shape), "rotation": degrees}
                    out.append((row, sils))
                writer.finalize({"video": str(path)})
        return out


def failed(path: str, vid: str, error: str, attempts: int = 1) -> dict:
    """The status line of a video no worker could finish."""
    return {"video": path, "id": vid, "status": "failed", "error": error, "attempts": attempts}


# ------------------------------------------------------------------------------------------------ local engine

_WORKER: ExtractWorker | None = None


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` does: the kernel's parent-death signal, and a watchdog as a fallback."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent went before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _stop_quietly(signum, frame) -> None:
    """A worker's SIGTERM (the driver stopping the pool, at its end or on its own interrupt): unwind, so that its
    scratch folder is removed and multiprocessing's own cleanup runs, and end without a traceback (a SystemExit;
    nothing a worker holds belongs to the dataset)."""
    raise SystemExit(128 + signum)


def _init_local(parent: int, *args) -> None:
    global _WORKER
    import signal
    _die_with_parent(parent)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = ExtractWorker(*args)
    signal.signal(signal.SIGTERM, _stop_quietly)  # after the models: Paddle's import sets its own handlers
    # the driver's verbosity (Paddle's import lowers the root logger's level to INFO in this fresh process)
    logging.getLogger().setLevel(logging.WARNING if args[0].quiet else logging.INFO)


def _run_local(path: str, vid: str) -> dict:
    assert _WORKER is not None
    return _WORKER(path, vid)


def _terminate(pool) -> None:
    """Stop a pool now: cancel what is queued and end its processes without waiting for running videos."""
    # ProcessPoolExecutor has no public way to end running workers before Python 3.14 (terminate_workers)
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for _ in range(2):  # a worker stopped mid-video hands its SystemExit back and waits: the second one ends it
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(2)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(2)
    pool.shutdown(wait=True)  # its processes are gone: its manager thread ends and releases the queues' semaphores


def run_local(todo: list[tuple[str, str]], worker_args: tuple, workers: int):
    """Yield each video's status as it finishes; ``workers`` processes, models loaded once in each. At most
    ``workers`` videos are in flight, so a broken pool names exactly the videos that were running."""
    if workers <= 1:  # in this process: it ends with the driver by construction
        worker = ExtractWorker(*worker_args)
        for path, vid in todo:
            yield worker(path, vid)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    ctx = multiprocessing.get_context("spawn")  # no inherited threads or model state
    pending = deque((path, vid, 1) for path, vid in todo)
    while pending:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_local,
                                   initargs=(os.getpid(), *worker_args))
        inflight: dict = {}
        try:
            broken = False
            while (pending and not broken) or inflight:
                while pending and not broken and len(inflight) < workers:
                    path, vid, n = pending.popleft()
                    inflight[pool.submit(_run_local, path, vid)] = (path, vid, n)
                done, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                for f in done:
                    path, vid, n = inflight.pop(f)
                    try:
                        rec = f.result()
                    except BrokenProcessPool:
                        broken = True
                        if n < ATTEMPTS:
                            log.warning("%s: its worker process died; trying it again on a fresh worker", path)
                            pending.appendleft((path, vid, n + 1))
                        else:
                            yield failed(path, vid, "the worker process died while extracting it "
                                         f"({n} attempts)", n)
                        continue
                    rec["attempts"] = n
                    yield rec
        finally:
            _terminate(pool)
