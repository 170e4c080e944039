"""Small builders shared by tests: synthetic videos written with OpenCV, gait models with non-trivial statistics."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, frames: int, size_wh: tuple[int, int] = (160, 120), fps: float = 25.0,
                seed: int = 0) -> Path:
    """A video of smooth random texture (no people) with a given number of frames."""
    rng = np.random.default_rng(seed)
    w, h = size_wh
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not vw.isOpened():
        raise RuntimeError("cannot write test video")
    for i in range(frames):
        base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
        vw.write(base)
    vw.release()
    return path


def randomize_batchnorm(model, num_batches_tracked: int = 1234):
    """Give ``model``'s BatchNorm layers non-trivial affine parameters and running statistics (drawn from torch's
    global generator: seed it first), so that eval-mode normalisation is really exercised; returns it in eval mode."""
    import torch

    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn_like(t) * 0.2)
            elif name.endswith("running_var"):
                t.copy_(torch.rand_like(t) + 0.5)
            elif name.endswith("num_batches_tracked"):
                t.fill_(num_batches_tracked)
            elif t.dim() == 1 and name.endswith("weight"):  # BatchNorm affine
                t.copy_(torch.randn_like(t) * 0.1 + 1.0)
            elif t.dim() == 1 and name.endswith("bias"):
                t.copy_(torch.randn_like(t) * 0.1)
    return model.eval()


def aligned_fixture_sequences(shared: Path) -> dict[str, np.ndarray]:
    """The eight real PP-HumanSeg mask folders of ../shared/fixtures/silhouettes, aligned as OpenGait does:
    folder name ('plaza_gallery/001', ...) → uint8 [T, 64, 64]."""
    from allinone.stages.align import align_sequence

    out = {}
    for folder in sorted((shared / "fixtures/silhouettes").glob("*/*")):
        masks = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(folder.glob("*.png"))])
        out[f"{folder.parent.name}/{folder.name}"] = align_sequence(masks)[0]
    return out


def write_opengait_dataset(root: Path, sequences: dict[tuple[str, str, str], np.ndarray],
                           test_ids: list[str] | None = None, extra: dict | None = None) -> Path:
    """ROOT/<id>/<type>/<view>/<view>.pkl for each (id, type, view) → uint8 array; returns the partition JSON
    (every id in TEST_SET unless test_ids is given)."""
    import json
    import pickle

    ids = sorted({k[0] for k in sequences})
    for (lab, typ, vie), seq in sequences.items():
        d = root / lab / typ / vie
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"{vie}.pkl", "wb") as fh:
            pickle.dump(seq, fh)
    part = root.parent / f"{root.name}_partition.json"
    part.write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": test_ids or ids, **(extra or {})}))
    return part


def wait_listening(port: int, timeout: float = 15.0) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (read from /proc/net/tcp, so a one-client server such as
    ``ffmpeg -listen 1`` is not used up by the check). A busy machine can take seconds to start ffmpeg."""
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            if any(r.split()[1].upper().endswith(f":{port:04X}") and r.split()[3] == "0A" for r in rows):
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def looped_ts_server(video: Path, loops: int = 3):
    """A context manager: ffmpeg serving ``video`` played ``loops`` + 1 times at its own speed as HTTP MPEG-TS on a
    free loopback port (one client), waited for until it listens; yields the stream's URL, kills ffmpeg after."""
    import contextlib
    import socket
    import subprocess

    @contextlib.contextmanager
    def serve():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/walk.ts"
        server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", str(loops), "-i", str(video),
                                   "-c", "copy", "-f", "mpegts", "-listen", "1", url], stderr=subprocess.DEVNULL)
        try:
            wait_listening(port)
            yield url
        finally:
            server.kill()
            server.wait()
    return serve()


def at_once(target, arg, n: int = 2, timeout: float = 120) -> list:
    """Run ``target(arg, barrier, out)`` in ``n`` spawned processes that pass one barrier together; what each put on
    ``out``, sorted."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(arg, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    return sorted(out.get(timeout=5) for _ in procs)
