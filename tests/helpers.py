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


# float32 rounding of OpenGait's distance formula, derived here (not read from the package): in
# |a|^2 + |b|^2 - 2 a.b over c channels, each of the three c-term sums has the textbook forward error
# c u/(1 - c u) of the sum of its terms' magnitudes (u = 2^-24), and 2|a.b| <= |a|^2 + |b|^2, so the squared
# distance is off by at most about 2 c u (|a|^2 + |b|^2), the two additions and the doubling add a few u more:
# 2.02 c u leaves room for those. The error scales with the lengths, not with the (possibly tiny) distance.
F32_U = 2.0 ** -24


def float32_distance_bound(a: np.ndarray, b: np.ndarray, metric: str = "euc") -> np.ndarray:
    """[n, m] bound on |float32 distance - exact distance| for OpenGait's part-averaged distance between
    a [n, c, p] and b [m, c, p] (the float32 inputs, read exactly in float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    c, p = a.shape[1], a.shape[2]
    gamma = 2.02 * c * F32_U + 4 * F32_U
    if metric == "cos":
        # unit vectors: the dot product is off by at most c u; each normalisation moves a vector by at most
        # (c + 2) u of its unit length; the mean over parts and 1 - x add p + 2 u
        per_part = (c * F32_U + 2 * (c + 2) * F32_U) * 1.01
        return np.full((len(a), len(b)), per_part + (p + 2) * F32_U)
    na = (a * a).sum(1)  # [n, p]
    nb = (b * b).sum(1)  # [m, p]
    exact = ((a[:, None] - b[None]) ** 2).sum(2)  # [n, m, p] squared part distances
    e = gamma * (na[:, None] + nb[None])  # bound on the squared distance's error, per part
    # |sqrt(x) - sqrt(y)| <= min(sqrt|x - y|, |x - y| / sqrt(y)) with y the exact square (>= 0)
    with np.errstate(divide="ignore"):
        per_part = np.minimum(np.sqrt(e), np.where(exact > 0, e / np.sqrt(np.maximum(exact, 1e-300)), np.inf))
    d = np.sqrt(exact).mean(2)
    return per_part.mean(2) + (p + 3) * F32_U * d  # sqrt, the part sum and the division round relatively


def exact_distance(a: np.ndarray, b: np.ndarray, metric: str = "euc") -> np.ndarray:
    """[n, m] OpenGait's part-averaged distance in float64, pair by pair (an independent reference)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if metric == "cos":
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 1.0 - np.einsum("ick,jck->ijk", an, bn).mean(2)
    return np.sqrt(((a[:, None] - b[None]) ** 2).sum(2)).mean(2)


def assert_float32_distances(actual, exact, bound, sort: bool = False) -> None:
    """float32 distances ``actual`` equal the ``exact`` ones within ``bound`` (float32_distance_bound), element by
    element; with ``sort``, the sorted values against the sorted exact ones within the largest bound (sorting moves
    no value by more than the largest difference)."""
    got = np.asarray(actual, np.float64).ravel()
    want = np.asarray(exact, np.float64).ravel()
    bound = np.broadcast_to(np.asarray(bound, np.float64), np.shape(exact)).ravel()
    assert got.shape == want.shape, (got.shape, want.shape)
    if sort:
        got, want, bound = np.sort(got), np.sort(want), np.full(got.shape, bound.max())
    bad = np.abs(got - want) > bound
    assert not bad.any(), (f"{int(bad.sum())} distance(s) beyond float32's bound: got {got[bad][:3]}, "
                           f"exact {want[bad][:3]}, bound {bound[bad][:3]}")


def decodable_frames(path) -> int:
    """Frames decoded from the start of a video file that may end in a torn fragment (decoding stops at the tear)."""
    import av
    n = 0
    try:
        with av.open(str(path)) as c:
            for _ in c.decode(video=0):
                n += 1
    except av.error.FFmpegError:
        pass
    return n
