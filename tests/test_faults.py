"""The fault suite: bad input and real faults, one row per case, each run as a user runs it (python main.py in a
subprocess). Every row states the command, the fault or bad input, the exit code (2: the user's input, 1: the
machine, 130: interrupted), a fragment of the one line it must end in, and every row checks that no traceback was
printed and that nothing that looks complete, nor any partial folder, was left behind.

Most rows fail before any model loads. A real full disk is a 2 MiB tmpfs filled to the last byte (only as root; the
rows skip otherwise); kills are real SIGKILL / SIGINT sent to the command at a given point of its work.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.conftest import REPO
from tests.helpers import decodable_frames

CLIP_FRAMES = 40


# ------------------------------------------------------------------------------------------------ materials

def _cut_clip(src: Path, dst: Path, frames: int = CLIP_FRAMES, faststart_h264: bool = False) -> Path:
    """The first ``frames`` frames of ``src`` at half size (one walking person): MPEG-4 Part 2 in MP4 (index at the
    end), or H.264 with the index in front (which still plays when cut short)."""
    import av
    import cv2
    cap = cv2.VideoCapture(str(src))
    imgs = []
    for _ in range(frames):
        ok, f = cap.read()
        assert ok
        imgs.append(cv2.resize(f, (360, 640)))
    cap.release()
    if not faststart_h264:
        w = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 30, (360, 640))
        for f in imgs:
            w.write(f)
        w.release()
        return dst
    fmt = "mpegts" if dst.suffix == ".ts" else "mp4"
    with av.open(str(dst), "w", format=fmt, options={"movflags": "+faststart"} if fmt == "mp4" else {}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 360, 640, "yuv420p"
        for f in imgs:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return dst


def _gallery_file(path: Path) -> Path:
    """A real gallery file (our store's schema, WAL off so the pages live in the one file) of a few pages."""
    from allinone.gallery.store import GalleryStore
    with GalleryStore(path, create=True) as store:
        store.db.execute("PRAGMA journal_mode=DELETE")
        store.db.executemany("INSERT INTO identities (name, created) VALUES (?, ?)",
                             [(f"person-{i:04d}" + "x" * 200, "2026-01-01") for i in range(200)])
    return path


def _damage(path: Path) -> Path:
    """Random bytes over the file's pages after the first (its header and schema stay)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(7)
    data[4096:] = rng.integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@dataclass
class Kit:
    shared: Path
    root: Path
    ckpt: Path
    clip: Path
    run: Path  # a real run folder (gallery clip, probe clip), rematch rows copy it
    dataset: Path
    partition: Path
    gallery: Path  # a real gallery file
    enrolled: Path | None = None  # a gallery file with the clip's walker enrolled as "alice"
    db_run: Path | None = None  # a run folder of the probe against ``enrolled`` (it keeps gallery_features.npz)

    def models(self, gait: bool = True) -> list[str]:
        m = ["--detector", str(self.shared / "weights/yolox_nano.onnx"),
             "--seg-model", str(self.shared / "weights/pphumanseg_onnx_model.onnx")]
        return m + (["--gait-model", str(self.ckpt)] if gait else [])


def main_py(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def kit(tmp_path_factory, shared, random_gaitbase) -> Kit:
    from tests.helpers import aligned_fixture_sequences, write_opengait_dataset
    root = tmp_path_factory.mktemp("faultkit")
    clip = _cut_clip(shared / "fixtures/videos/demo2.mp4", root / "clip.mp4")
    probe = root / "probe.mp4"
    shutil.copyfile(clip, probe)
    k = Kit(shared, root, random_gaitbase, clip, root / "runs/r", root / "ds", root / "ds_partition.json",
            _gallery_file(root / "gallery.sqlite"))
    res = main_py("--gallery", str(clip), "--probe", str(probe), *k.models(), "--threshold", "1e9",
                  "--output", str(root / "runs"), "--name", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    k.enrolled = root / "enrolled.sqlite"
    res = main_py("enroll", str(clip), "--name", "alice", "--gallery-db", str(k.enrolled), *k.models(), "--quiet")
    assert res.returncode == 0, res.stderr
    res = main_py("--gallery-db", str(k.enrolled), "--probe", str(probe), *k.models(), "--threshold", "1e9",
                  "--output", str(root / "runs"), "--name", "db", "--quiet")
    assert res.returncode == 0, res.stderr
    k.db_run = root / "runs/db"
    seqs = list(aligned_fixture_sequences(shared).values())
    ds = {(f"{i + 1:03d}", t, v): seqs[i + 4 * j][:12] for i in range(3) for t in ("nm-01", "nm-05")
          for j, v in enumerate(("000", "090"))}
    write_opengait_dataset(k.dataset, ds)
    return k


# ------------------------------------------------------------------------------------------------ one case

@dataclass
class Ctx:
    kit: Kit
    tmp: Path
    mounts: list = field(default_factory=list)
    sha: str = ""  # a file's sha256 before the command, where a row checks that it was left unchanged

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p

    def run_copy(self) -> Path:
        dst = self.tmp / "runs" / "r"
        if not dst.exists():
            shutil.copytree(self.kit.run, dst)
        return dst

    def manifest(self) -> dict:
        return json.loads((self.run_copy() / "run.json").read_text())

    def feature(self) -> Path:
        m = self.manifest()
        t = next(t for v in m["videos"] if v["role"] == "probe" for t in v["tracks"] if "feature" in t)
        return self.run_copy() / t["feature"]

    def full_disk(self, leave: int = 0) -> Path:
        """A 2 MiB tmpfs, filled: the next byte written fails with ENOSPC (or the one after ``leave`` bytes)."""
        if os.geteuid() != 0:
            pytest.skip("a real full disk needs a tmpfs mount: run the suite as root (CI does)")
        d = self.tmp / "full"
        d.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)]).returncode != 0:
            pytest.skip("mounting a tmpfs is not allowed here")
        self.mounts.append(d)
        with open(d / "filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        try:
            with open(d / "filler2", "wb") as fh:  # the last partial page
                while True:
                    fh.write(b"\0")
                    fh.flush()
        except OSError:
            pass
        if leave:
            (d / "filler2").unlink()
            size = (d / "filler").stat().st_size
            os.truncate(d / "filler", size - leave)
        return d

    def env(self) -> dict:
        t = self.tmp / "systmp"
        t.mkdir(exist_ok=True)
        return {**os.environ, "TMPDIR": str(t)}


@dataclass
class Case:
    id: str
    command: Callable[[Ctx], list[str]]  # sets up the fault and returns the command line
    rc: int
    fragment: str  # in the one line the command ends with ("" where a command that succeeds prints nothing)
    lines: int = 1  # stderr lines; 0: any (a live run's warnings, an extract's failed videos)
    check: Callable[[Ctx, subprocess.CompletedProcess], None] | None = None
    xfail: str = ""
    env: Callable[[Ctx], dict] | None = None  # environment variables for the command


def _leftovers(ctx: Ctx, empty: bool = False) -> list[str]:
    """Partial folders anywhere under the case's folder (not the kit's), and enrol temp folders (empty folders
    too where ``empty``)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(ctx.tmp):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if (".partial" in n or n.startswith("allinone-enrol-")) and (empty or not _empty_dir(p)):
                found.append(os.path.relpath(p, ctx.tmp))
    return found


def _empty_dir(p: str) -> bool:
    try:
        return os.path.isdir(p) and not os.listdir(p)
    except OSError:
        return True


def _complete_looking(ctx: Ctx, before: set[str]) -> list[str]:
    """New folders under out/ (or beside the copied run) with a manifest: they would look like results."""
    found = []
    for base in (ctx.out, ctx.tmp / "runs", ctx.tmp / "full"):
        if not base.is_dir():
            continue
        for d in base.iterdir():
            if str(d) in before or not d.is_dir():
                continue
            for mname in ("run.json", "metrics.json"):
                if (d / mname).is_file():
                    status = json.loads((d / mname).read_text()).get("status")
                    if status != "incomplete":
                        found.append(str(d))
    return found


def _snapshot(ctx: Ctx) -> set[str]:
    return {str(d) for base in (ctx.out, ctx.tmp / "runs", ctx.tmp / "full") if base.is_dir()
            for d in base.iterdir()}


def _error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.strip().splitlines() if x.strip() and not x.startswith("INFO:")]


# ------------------------------------------------------------------------------------------------ the rows

def _run(ctx: Ctx, *extra: str, gallery: Path | None = None, probe: Path | str | None = None, gait: bool = False,
         output: Path | None = None) -> list[str]:
    k = ctx.kit
    g = ["--gallery", str(gallery or k.clip)] if "--gallery-db" not in extra else []
    return [*g, "--probe", str(probe or k.root / "probe.mp4"), *k.models(gait), "--output", str(output or ctx.out), "--quiet",
            *([] if gait else ["--track-only"]), *extra]


def _rematch(ctx: Ctx, *extra: str) -> list[str]:
    return ["rematch", str(ctx.run_copy()), "--output", str(ctx.out), "--quiet", *extra]


def _calibration(ctx: Ctx, **fields) -> Path:
    m = ctx.manifest()
    rec = {"kind": "allinone-calibration", "version": 1, "checkpoint": str(ctx.kit.ckpt),
           "checkpoint_sha256": m["weights"]["gait"]["sha256"], "arch": "GaitBase", "metric": "euc",
           "threshold": 1.0, "target_fpir": 0.01, **fields}
    text = json.dumps(rec)
    for k, v in fields.items():  # JSON's non-standard literals, as a hand edit would leave them
        if isinstance(v, float) and not np.isfinite(v):
            text = text.replace(json.dumps({k: v})[1:-1], f'"{k}": {"NaN" if np.isnan(v) else "Infinity"}')
    return ctx.file("cal.json", text)


def _evaluate(ctx: Ctx, *extra: str, partition: Path | None = None, protocol: str = "casia-b",
              output: Path | None = None, dataset: Path | None = None) -> list[str]:
    k = ctx.kit
    return ["evaluate", "--dataset", str(dataset or k.dataset), "--partition", str(partition or k.partition), "--protocol",
            protocol, "--gait-model", str(k.ckpt), "--output", str(output or ctx.out), "--quiet", *extra]


def _partition(ctx: Ctx, obj) -> Path:
    return ctx.file("part.json", obj if isinstance(obj, str) else json.dumps(obj))


def _protocol(ctx: Ctx, obj) -> Path:
    return ctx.file("proto.json", obj if isinstance(obj, str) else json.dumps(obj))


def _enroll(ctx: Ctx, video: Path | None = None, db: Path | None = None, *extra: str) -> list[str]:
    return ["enroll", str(video or ctx.kit.clip), "--gallery-db", str(db or ctx.tmp / "g.sqlite"),
            *ctx.kit.models(), "--quiet", *extra]


def _damaged_gallery(ctx: Ctx) -> Path:
    p = ctx.tmp / "damaged.sqlite"
    shutil.copyfile(ctx.kit.gallery, p)
    return _damage(p)


def _truncated_probe(ctx: Ctx) -> Path:
    p = _cut_clip(ctx.kit.shared / "fixtures/videos/demo2.mp4", ctx.tmp / "cut.mp4", faststart_h264=True)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _feature_case(ctx: Ctx, array) -> list[str]:
    f = ctx.feature()
    if isinstance(array, bytes):
        f.write_bytes(array)
    else:
        np.save(f, array, allow_pickle=True)
    return _rematch(ctx)


def _check_truncated(ctx: Ctx, res) -> None:
    m = json.loads((ctx.out / "t/run.json").read_text())
    probe = m["videos"][1]
    assert "decoding stopped after frame" in probe["decode_warning"] and probe["frames"] < CLIP_FRAMES
    assert "decode_warning" not in m["videos"][0]


def _check_nan_free_metrics(ctx: Ctx, res) -> None:
    text = (ctx.out / "e/metrics.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))
    assert json.loads(text)["dataset"]["test_ids_missing"] == 1


def _existing(ctx: Ctx, name: str) -> str:
    (ctx.out / name).mkdir(parents=True)
    (ctx.out / name / "run.json").write_text("{}")
    return name


def _stream_server(ctx: Ctx) -> str:
    """The clip as MPEG-TS over real HTTP on the loopback (Python's http.server, for the length of the case)."""
    ts = _cut_clip(ctx.kit.shared / "fixtures/videos/demo2.mp4", ctx.tmp / "walk.ts", frames=80, faststart_h264=True)
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(ts.parent), **kw)  # noqa
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx.mounts.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}/walk.ts"


class _Served:
    """A context manager entered for the length of a case (ctx.mounts calls shutdown)."""

    def __init__(self, cm) -> None:
        self.cm = cm
        self.value = cm.__enter__()

    def shutdown(self) -> None:
        self.cm.__exit__(None, None, None)


def _stream_once(ctx: Ctx, video: Path | None = None, loops: int = 0) -> str:
    """``video`` (the 80-frame clip as MPEG-TS) played ``loops`` + 1 times at its speed by ffmpeg over HTTP on the
    loopback to one client, then gone: a stream that drops and never comes back."""
    from tests.helpers import looped_ts_server
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is missing here (.ci/run installs it)")
    video = video or _cut_clip(ctx.kit.shared / "fixtures/videos/demo2.mp4", ctx.tmp / "walk.ts", frames=80,
                               faststart_h264=True)
    served = _Served(looped_ts_server(video, loops))
    ctx.mounts.append(served)
    return served.value


def _live(ctx: Ctx, url: str, *extra: str) -> list[str]:
    return ["--gallery", str(ctx.kit.clip), "--probe", url, *ctx.kit.models(), "--threshold", "1e9", "--output",
            str(ctx.out), "--quiet", *extra]


def _check_duration(ctx: Ctx, res) -> None:
    """The stream dropped 2.7 s in and never came back: the run still ends at --duration (5 s), not after
    --reconnect (20 s)."""
    live = json.loads((ctx.out / "d/run.json").read_text())["live"]["walk"]
    assert live["wall_s"] <= 5 + 2.0, live["wall_s"]


DONE_SEQS = ["a-001", "a-002", "b-001", "b-002", "c-001", "c-002"]


def _done_dataset(ctx: Ctx, damage: str) -> list[str]:
    """An extract dataset of three done videos (copies of the clip) of two sequences each, recorded in
    videos.jsonl and manifest.parquet as extract writes them; then its bookkeeping damaged. The command extracts
    the same three videos again (or, where ``damage`` loses both files, a missing one)."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq
    ds, videos, recs = ctx.out / "ds", [], []
    for v in ("a", "b", "c"):
        src = ctx.tmp / f"{v}.mp4"
        shutil.copyfile(ctx.kit.clip, src)
        path = str(src.resolve())
        rows = [{"sequence": f"{v}-{t:03d}", "type": v, "view": "000", "source_video": path, "track": t}
                for t in (1, 2)]
        for r in rows:
            f = ds / r["sequence"] / v / "000" / f"{r['sequence']}.pkl"
            f.parent.mkdir(parents=True)
            f.write_bytes(pickle.dumps(np.zeros((12, 64, 64), np.uint8)))
        recs.append({"video": path, "id": v, "status": "done", "sequences": 2, "rows": rows})
        videos.append(path)
    lines = [json.dumps(r) + "\n" for r in recs]
    pq.write_table(pa.Table.from_pylist([row for r in recs for row in r["rows"]]), ds / "manifest.parquet")
    if damage == "torn-first-line":
        lines[0] = lines[0][: len(lines[0]) // 2] + "\n"
    (ds / "videos.jsonl").write_text("".join(lines))
    if damage in ("missing", "both-missing"):
        (ds / "videos.jsonl").unlink()
    if damage == "both-missing":
        (ds / "manifest.parquet").unlink()
        videos = [str(ctx.tmp / "gone.mp4")]
    return ["extract", *videos, "--out", str(ds), "--workers", "1", *ctx.kit.models(gait=False), "--quiet"]


def _check_all_kept(ctx: Ctx, res) -> None:
    """Every sequence still in the dataset, and both files listing them: nothing extracted again."""
    import pyarrow.parquet as pq
    ds = ctx.out / "ds"
    assert sorted(p.parent.parent.parent.name for p in ds.glob("*/*/000/*.pkl")) == DONE_SEQS
    assert sorted(pq.read_table(ds / "manifest.parquet").column("sequence").to_pylist()) == DONE_SEQS
    assert json.loads(res.stdout.strip().splitlines()[-1])["skipped"] == 3


def _check_set_aside(ctx: Ctx, res) -> None:
    """No record and no manifest row: the sequences are moved aside whole, not deleted."""
    ds = ctx.out / "ds"
    assert sorted(p.parent.parent.parent.name for p in ds.glob(".unaccounted/*/*/*/000/*.pkl")) == DONE_SEQS
    assert not list(ds.glob("*/*/000/*.pkl"))


S = "--gallery-db"
CASES = [
    # ---- run: inputs (all refused before a model loads)
    Case("run/missing-video", lambda c: _run(c, probe=c.tmp / "missing.mp4"), 2, "not found"),
    Case("run/garbage-video", lambda c: _run(c, probe=c.file("garbage.mp4", b"\0\1garbage" * 999)), 2,
         "garbage.mp4"),
    Case("run/zero-byte-video", lambda c: _run(c, probe=c.file("zero.mp4", b"")), 2, "zero.mp4"),
    Case("run/video-cut-before-its-index", lambda c: _run(c, probe=c.file(
        "half.mp4", c.kit.clip.read_bytes()[: c.kit.clip.stat().st_size // 2])), 2, "half.mp4"),
    Case("run/video-is-a-folder", lambda c: _run(c, probe=c.tmp), 2, "not a file"),
    Case("run/unknown-detector", lambda c: _run(c, "--detector", str(c.file("banana.txt", "x"))), 2, "banana.txt"),
    Case("run/output-under-a-file", lambda c: _run(c, output=c.file("a_file", "x") / "runs"), 2, "a_file"),
    Case("run/name-with-slash", lambda c: _run(c, "--name", "a/b"), 2, "plain folder name"),
    Case("run/name-exists", lambda c: _run(c, "--name", _existing(c, "taken")), 2, "exists already"),
    Case("run/threshold-negative", lambda c: _run(c, "--threshold", "-1", gait=True), 2, "--threshold"),
    Case("run/threshold-nan", lambda c: _run(c, "--threshold", "nan", gait=True), 2, "--threshold"),
    Case("run/calibration-missing", lambda c: _run(c, "--calibration", str(c.tmp / "nope.json"), gait=True), 2,
         "calibration file not found"),
    Case("run/frame-step-zero", lambda c: _run(c, "--frame-step", "0"), 2, "--frame-step"),
    Case("run/gallery-db-missing", lambda c: _run(c, S, str(c.tmp / "none.sqlite"), gait=True), 2,
         "gallery file not found"),
    Case("run/gallery-db-not-sqlite", lambda c: _run(c, S, str(c.file("text.sqlite", "hello " * 500)), gait=True),
         2, "not a gallery file"),
    Case("run/gallery-db-damaged", lambda c: _run(c, S, str(_damaged_gallery(c)), gait=True), 2, "damaged"),
    Case("run/stream-with-track-only", lambda c: _run(c, probe="rtsp://127.0.0.1:9/x"), 2, "--track-only"),
    # ---- run: results that cannot be mistaken
    Case("run/truncated-video-warns", lambda c: _run(c, "--name", "t", probe=_truncated_probe(c)), 0,
         "decoding stopped after frame", check=_check_truncated),
    # ---- run: the machine
    Case("run/disk-full", lambda c: _run(c, output=c.full_disk() / "out"), 1, "disk is full"),
    Case("run/output-read-only", lambda c: _run(c, output=_read_only(c)), 1, "read-only file system"),
    Case("live/disk-full", lambda c: ["--gallery-db", str(c.kit.gallery), "--probe", _stream_server(c),
                                      *c.kit.models(), "--output", str(c.full_disk() / "out"), "--quiet",
                                      "--reconnect", "2"], 1, "disk is full", lines=0),
    Case("watch/disk-full", lambda c: _watch_cmd(c, c.full_disk() / "out", "--duration", "60"), 1, "disk is full",
         lines=0),
    # room for the database and the first seconds of the segments, then the disk fills while it runs
    Case("watch/disk-fills-while-it-runs", lambda c: _watch_cmd(c, c.full_disk(leave=600_000) / "out", "--duration",
                                                                "120"), 1, "disk is full", lines=0),
    Case("live/duration-while-reconnecting", lambda c: _live(c, _stream_once(c), "--name", "d", "--duration", "5",
                                                             "--reconnect", "20"), 0, "reconnecting", lines=0,
         check=_check_duration),
    # ---- rematch: the run folder and its features
    Case("rematch/missing-folder", lambda c: ["rematch", str(c.tmp / "nowhere")], 2, "not a run folder"),
    Case("rematch/no-run-json", lambda c: ["rematch", str(c.tmp)], 2, "not a finished run folder"),
    Case("rematch/run-json-garbage", lambda c: ["rematch", str(c.file("rr/run.json", "{oops").parent)], 2,
         "not a readable run.json"),
    Case("rematch/run-json-old-version", lambda c: ["rematch", str(c.file("rv/run.json", '{"version": 1}').parent)],
         2, "older allinone"),
    Case("rematch/feature-wrong-shape", lambda c: _feature_case(c, np.zeros((3, 5), np.float32)), 2, "shape (3, 5)"),
    Case("rematch/feature-all-nan", lambda c: _feature_case(c, np.full((256, 16), np.nan, np.float32)), 2,
         "NaN or infinite"),
    Case("rematch/feature-with-inf", lambda c: _feature_case(c, np.where(np.eye(256, 16) > 0, np.inf, 0).astype(
        np.float32)), 2, "NaN or infinite"),
    Case("rematch/feature-garbage-bytes", lambda c: _feature_case(c, b"\x93NUMPY garbage" * 50), 2,
         "not a readable .npy"),
    Case("rematch/feature-pickled-object", lambda c: _feature_case(c, np.array([{"a": 1}], dtype=object)), 2,
         "pickled data"),
    Case("rematch/feature-integers", lambda c: _feature_case(c, np.zeros((256, 16), np.int64)), 2, "wrong form"),
    Case("rematch/feature-missing", lambda c: (c.feature().unlink(), _rematch(c))[1], 2, "stored feature missing"),
    Case("rematch/threshold-not-a-number", lambda c: _rematch(c, "--threshold", "abc"), 2, "--threshold"),
    Case("rematch/calibration-threshold-abc", lambda c: _rematch(c, "--calibration", str(_calibration(
        c, threshold="abc"))), 2, "calibration file has a threshold that is not a number"),
    Case("rematch/calibration-threshold-nan", lambda c: _rematch(c, "--calibration", str(_calibration(
        c, threshold=float("nan")))), 2, "calibration file has an impossible threshold"),
    Case("rematch/calibration-threshold-negative", lambda c: _rematch(c, "--calibration", str(_calibration(
        c, threshold=-0.5))), 2, "calibration file has an impossible threshold"),
    Case("rematch/calibration-fpir-out-of-range", lambda c: _rematch(c, "--calibration", str(_calibration(
        c, target_fpir=7))), 2, "impossible target_fpir"),
    Case("rematch/calibration-not-json", lambda c: _rematch(c, "--calibration", str(c.file("cal.json", "{x"))), 2,
         "not a readable calibration file"),
    Case("rematch/calibration-wrong-kind", lambda c: _rematch(c, "--calibration", str(c.file("cal.json", "[]"))), 2,
         "not a calibration file"),
    Case("rematch/name-exists", lambda c: _rematch(c, "--name", _existing(c, "taken")), 2, "exists already"),
    Case("rematch/disk-full", lambda c: ["rematch", str(c.run_copy()), "--output", str(c.full_disk()), "--quiet"],
         1, "disk is full"),
    # ---- evaluate and calibrate: partition, protocol, metrics files
    Case("evaluate/partition-missing", lambda c: _evaluate(c, partition=c.tmp / "nope.json"), 2,
         "partition JSON not found"),
    Case("evaluate/partition-not-json", lambda c: _evaluate(c, partition=_partition(c, "{TEST_SET: 1")), 2,
         "not a readable partition JSON"),
    Case("evaluate/partition-no-test-set", lambda c: _evaluate(c, partition=_partition(c, {"TRAIN_SET": []})), 2,
         "needs a TEST_SET"),
    Case("evaluate/partition-ids-not-ids", lambda c: _evaluate(c, partition=_partition(c, {"TEST_SET": [{"a": 1}]})),
         2, "partition JSON: TEST_SET must be a list of ids"),
    Case("evaluate/partition-empty", lambda c: _evaluate(c, partition=_partition(c, {"TEST_SET": []})), 2,
         "TEST_SET is empty"),
    Case("evaluate/partition-ids-absent", lambda c: _evaluate(c, partition=_partition(c, {"TEST_SET": ["777"]})), 2,
         "none of the partition's TEST_SET ids"),
    Case("evaluate/protocol-not-json", lambda c: _evaluate(c, protocol=str(_protocol(c, "{oops"))), 2,
         "not a readable protocol JSON"),
    Case("evaluate/protocol-wrong-form", lambda c: _evaluate(c, protocol=str(_protocol(c, {"gallery": []}))), 2,
         "a protocol file needs"),
    Case("evaluate/protocol-types-not-a-list", lambda c: _evaluate(c, protocol=str(_protocol(
        c, {"gallery": {"types": "nm-01"}, "probes": {"A": {"types": ["nm-05"]}}}))), 2,
         "protocol JSON: gallery.types must be a non-empty list"),
    Case("evaluate/protocol-selects-nothing", lambda c: _evaluate(c, protocol=str(_protocol(
        c, {"gallery": {"types": ["zz-*"]}, "probes": {"A": {"types": ["nm-05"]}}}))), 2,
         "gallery selects none"),
    Case("evaluate/builtin-protocol-selects-nothing", lambda c: _evaluate(c, protocol="oumvlp"), 2,
         "selects nothing in this dataset", check=lambda c, r: _absent(c.out / ".embed-cache")),  # nothing embedded
    Case("evaluate/partition-id-missing-warns", lambda c: _evaluate(c, "--name", "e", partition=_partition(
        c, {"TEST_SET": ["001", "002", "003", "404"]})), 0, "1 of the partition's 4 TEST_SET ids are not in the "
         "dataset", check=_check_nan_free_metrics),
    Case("evaluate/disk-full", lambda c: _evaluate(c, output=c.full_disk() / "out"), 1, "disk is full"),
    Case("calibrate/metrics-garbage", lambda c: ["calibrate", "--evaluation", str(c.file(
        "ev/metrics.json", '{"open_set": 3}').parent)], 2, "metrics.json: not one written by"),
    Case("calibrate/no-searches", lambda c: ["calibrate", "--evaluation", str(c.file("ev/metrics.json", json.dumps(
        {"open_set": {}, "model": {"path": "m", "sha256": "s", "arch": "a", "metric": "euc"}})).parent)], 2,
         "searches.npz missing"),
    # ---- enroll and gallery
    Case("enroll/missing-video", lambda c: _enroll(c, c.tmp / "missing.mp4"), 2, "not found"),
    Case("enroll/gallery-db-is-a-folder", lambda c: _enroll(c, db=c.tmp), 2, "is a directory"),
    Case("enroll/gallery-db-damaged", lambda c: _enroll(c, db=_damaged_gallery(c)), 2, "damaged"),
    Case("enroll/disk-full-temp-folder", lambda c: _enroll(c), 1, "disk is full",
         env=lambda c: {"TMPDIR": str(c.full_disk(leave=16384))}),  # room for tempfile's probe, not for the run
    Case("enroll/disk-full-gallery-file", lambda c: _enroll(c, db=c.full_disk() / "g.sqlite"), 1, "disk is full"),
    Case("gallery/list-damaged", lambda c: ["gallery", "--gallery-db", str(_damaged_gallery(c)), "list"], 2,
         "damaged"),
    Case("gallery/rename-damaged", lambda c: ["gallery", "--gallery-db", str(_damaged_gallery(c)), "rename",
                                              "person-0001", "x"], 2, "damaged"),
    Case("gallery/list-not-sqlite", lambda c: ["gallery", "--gallery-db", str(c.file("t.sqlite", "hello " * 500)),
                                               "list"], 2, "not a gallery file"),
    # ---- extract
    Case("extract/disk-full", lambda c: ["extract", str(c.kit.clip), "--out", str(c.full_disk() / "ds"),
                                         "--workers", "1", *c.kit.models(gait=False), "--quiet"], 1, "disk is full"),
    Case("extract/videos-jsonl-torn-first-line", lambda c: _done_dataset(c, "torn-first-line"), 0,
         "rebuilt from manifest.parquet", lines=0, check=_check_all_kept),
    Case("extract/videos-jsonl-missing", lambda c: _done_dataset(c, "missing"), 0, "rebuilt from manifest.parquet",
         lines=0, check=_check_all_kept),
    Case("extract/records-and-manifest-missing", lambda c: _done_dataset(c, "both-missing"), 1, "not deleted",
         lines=0, check=_check_set_aside),
    Case("extract/list-with-a-missing-video", lambda c: ["extract", "--list", str(c.file(
        "list.txt", f"{c.tmp / 'gone.mp4'}\n")), "--out", str(c.out / "ds"), "--workers", "1",
        *c.kit.models(gait=False), "--quiet"], 1, "gone.mp4", lines=0),
]


def _long_named(ctx: Ctx, letter: str, length: int) -> Path:
    """The kit's clip under a file name of ``length`` characters (a legal name: Linux takes 255 bytes)."""
    return Path(shutil.copyfile(ctx.kit.clip, ctx.tmp / (letter * (length - 4) + ".mp4")))


def _check_long_named(ctx: Ctx, res) -> None:
    m = json.loads((ctx.out / "l/run.json").read_text())
    probe = m["videos"][1]
    assert probe["tracks"] and (ctx.out / "l" / probe["result_video"]).stat().st_size > 0, probe


def _enrolled_copy(ctx: Ctx, nan: bool = False, damage: bool = False) -> Path:
    """A copy of the kit's enrolled gallery file: one value of its first feature NaN, or 8 KiB of random bytes over
    its middle (the header and the first pages stay)."""
    import sqlite3
    p = Path(shutil.copyfile(ctx.kit.enrolled, ctx.tmp / "enrolled.sqlite"))
    if nan:
        with sqlite3.connect(p) as db:
            tid, blob = db.execute("SELECT id, feature FROM tracks ORDER BY id LIMIT 1").fetchone()
            feat = np.frombuffer(blob, np.float32).copy()
            feat[7] = np.nan
            db.execute("UPDATE tracks SET feature = ? WHERE id = ?", (feat.tobytes(), tid))
        db.close()
    if damage:
        data = bytearray(p.read_bytes())
        start = len(data) // 2 - 4096
        data[start:start + 8192] = np.random.default_rng(3).integers(0, 256, 8192, dtype=np.uint8).tobytes()
        p.write_bytes(bytes(data))
    ctx.sha = _sha(p)
    return p


def _sha(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unchanged(ctx: Ctx) -> None:
    assert _sha(ctx.tmp / "enrolled.sqlite") == ctx.sha, "the damaged gallery file was written to"


def _check_finds_nan(ctx: Ctx, res) -> None:
    chk = main_py("gallery", "--gallery-db", str(ctx.tmp / "enrolled.sqlite"), "check")
    assert chk.returncode == 1 and "damaged" in chk.stdout and "NaN" in chk.stdout, (chk.stdout, chk.stderr)


def _db_run_with_nan(ctx: Ctx) -> list[str]:
    run = Path(shutil.copytree(ctx.kit.db_run, ctx.tmp / "runs/db"))
    with np.load(run / "gallery_features.npz") as f:
        arrays = dict(f)
    arrays["features"][0, 3, 5] = np.nan
    np.savez(run / "gallery_features.npz", **arrays)
    return ["rematch", str(run), "--output", str(ctx.out), "--quiet"]


def _nobody_video(ctx: Ctx) -> Path:
    import cv2
    p = ctx.tmp / "empty_room.mp4"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 30, (360, 640))
    for i in range(20):
        w.write(np.full((640, 360, 3), 90 + i, np.uint8))
    w.release()
    return p


def _export_on_full_disk(ctx: Ctx) -> list[str]:
    return ["gallery", "--gallery-db", str(ctx.kit.enrolled), "export", str(ctx.full_disk() / "exported")]


def _nothing_exported(ctx: Ctx, res) -> None:
    left = [p.name for p in (ctx.tmp / "full").iterdir() if not p.name.startswith("filler")]
    assert left == [], left


def _absent(path: Path) -> None:
    assert not path.exists(), f"{path} was left behind"


def _gallery_copy(ctx: Ctx) -> Path:
    return Path(shutil.copyfile(ctx.kit.gallery, ctx.tmp / "g.sqlite"))


def _names_in(ctx: Ctx, name: str) -> None:
    import sqlite3
    with sqlite3.connect(ctx.tmp / "g.sqlite") as db:
        assert (name,) in db.execute("SELECT name FROM identities").fetchall()


class _RunsCode:
    """Pickles as a call of os.system (what a hostile file holds): touching ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _code_pickle(ctx: Ctx) -> bytes:
    import pickle
    return pickle.dumps(_RunsCode(ctx.tmp / "ran"))


def _code_checkpoint(ctx: Ctx) -> Path:
    import torch
    state = torch.load(ctx.kit.ckpt, map_location="cpu", weights_only=True)
    state["cfg"] = _RunsCode(ctx.tmp / "ran")
    torch.save(state, ctx.tmp / "trojan.pt")
    return ctx.tmp / "trojan.pt"


def _dataset_with(ctx: Ctx, pkl: bytes) -> Path:
    """A copy of the kit's dataset with one sequence's pickle replaced by ``pkl``."""
    ds = ctx.tmp / "ds"
    shutil.copytree(ctx.kit.dataset, ds)
    next(iter(sorted(ds.rglob("*.pkl")))).write_bytes(pkl)
    return ds


def _nothing_ran(ctx: Ctx) -> None:
    assert not (ctx.tmp / "ran").exists(), "code from the file ran"


def _names(res: subprocess.CompletedProcess, text: str) -> None:
    assert text in _error_lines(res.stderr)[-1], res.stderr



CASES += [
    # ---- data files that would run code
    Case("evaluate/dataset-pickle-runs-code", lambda c: _evaluate(c, dataset=_dataset_with(c, _code_pickle(c))), 2,
         "refused: the pickle asks for", check=lambda c, r: _nothing_ran(c)),
    Case("run/checkpoint-pickles-code", lambda c: _run(c, "--gait-model", str(_code_checkpoint(c)), gait=True), 2,
         "pickles objects other than tensors", check=lambda c, r: (_nothing_ran(c), _names(r, "--trust-checkpoint"))),
    # ---- flags: one line, --help for the rest
    Case("run/unknown-flag", lambda c: _run(c, "--no-such-flag"), 2, "--no-such-flag",
         check=lambda c, r: _names(r, "--help")),
    Case("gallery/unknown-flag", lambda c: ["gallery", "list", "--bogus"], 2, "--bogus",
         check=lambda c, r: _names(r, "python main.py gallery --help")),
    # ---- one rule: the machine's fault exits 1, the input's 2
    Case("extract/output-read-only", lambda c: ["extract", str(c.kit.clip), "--out", str(_read_only(c)),
                                                "--workers", "1", *c.kit.models(gait=False), "--quiet"], 1,
         "read-only file system"),
    Case("extract/output-is-read-only", lambda c: ["extract", str(c.kit.clip), "--out", str(_read_only(c).parent),
                                                   "--workers", "1", *c.kit.models(gait=False), "--quiet"], 1,
         "read-only file system"),
    # ---- one name rule: what --identity refuses, enroll and rename refuse
    Case("enroll/name-with-a-newline", lambda c: _enroll(c, None, None, "--name", "alice\nperson-0001"), 2,
         "may not contain \\n", check=lambda c, r: _absent(c.tmp / "g.sqlite")),
    Case("enroll/name-with-a-colon", lambda c: _enroll(c, None, None, "--name", "a:b"), 2, "may not contain :"),
    Case("gallery/rename-to-a-newline", lambda c: ["gallery", "--gallery-db", str(_gallery_copy(c)), "rename",
                                                   "person-0001" + "x" * 200, "bob\nperson-0002"], 2,
         "may not contain \\n", check=lambda c, r: _names_in(c, "person-0001" + "x" * 200)),
    # ---- long names: temporary names do not grow with them; one the output cannot hold fails before any work
    Case("run/file-name-of-244-characters", lambda c: _run(c, "--name", "l", probe=_long_named(c, "p", 244),
                                                           gait=True), 0, "", lines=0, check=_check_long_named),
    Case("run/name-too-long-for-the-output", lambda c: _run(c, gallery=_long_named(c, "g", 200),
                                                            probe=_long_named(c, "p", 244), gait=True), 2,
         "too long a name for the output"),
    # ---- a gallery file's features and pages checked when read, and before every write
    Case("run/gallery-db-feature-nan", lambda c: _run(c, S, str(_enrolled_copy(c, nan=True)), gait=True), 2,
         "NaN or infinite", check=_check_finds_nan),
    Case("rematch/gallery-features-nan", _db_run_with_nan, 2, "NaN or infinite"),
    Case("enroll/gallery-db-damaged-in-the-middle", lambda c: _enroll(c, db=_enrolled_copy(c, damage=True)), 2,
         "damaged", check=lambda c, r: _unchanged(c)),
    Case("gallery/rename-damaged-in-the-middle", lambda c: ["gallery", "--gallery-db", str(_enrolled_copy(
        c, damage=True)), "rename", "alice", "bob"], 2, "damaged", check=lambda c, r: _unchanged(c)),
    Case("gallery/list-damaged-in-the-middle", lambda c: ["gallery", "--gallery-db", str(_enrolled_copy(
        c, damage=True)), "list"], 2, "damaged"),
    # ---- exports and enrols that fail leave nothing
    Case("gallery/export-onto-a-file", lambda c: ["gallery", "--gallery-db", str(c.kit.enrolled), "export",
                                                  str(c.file("taken.txt", "mine"))], 2, "not a folder",
         check=lambda c, r: (c.tmp / "taken.txt").read_text() == "mine" or pytest.fail("the file was changed")),
    Case("gallery/export-disk-full", _export_on_full_disk, 1, "disk is full", check=_nothing_exported),
    Case("enroll/nobody-into-a-new-gallery-file", lambda c: _enroll(c, _nobody_video(c)), 2, "nobody to enrol",
         lines=0, check=lambda c, r: _absent(c.tmp / "g.sqlite")),
    # ---- cheap checks first: a detector that cannot load shows which check came first
    Case("run/calibration-for-another-checkpoint", lambda c: _run(c, "--calibration", str(_calibration(
        c, checkpoint_sha256="0" * 64)), "--detector", str(c.file("unloadable.onnx", b"\0" * 5000)), gait=True), 2,
         "made for another checkpoint"),
    Case("run/identity-with-a-tab", lambda c: _run(c, "--identity", "a\tb=1", gait=True), 2, "may not contain \\t"),
]


def _read_only(ctx: Ctx) -> Path:
    if os.geteuid() != 0:
        pytest.skip("a read-only file system needs a mount: run the suite as root (CI does)")
    d = ctx.tmp / "ro"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)]).returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here")
    ctx.mounts.append(d)
    return d / "out"


@pytest.fixture
def ctx(kit, tmp_path):
    c = Ctx(kit, tmp_path)
    yield c
    for m in c.mounts:
        if isinstance(m, Path):
            subprocess.run(["umount", "-l", str(m)])
        else:
            m.shutdown()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                                               if c.xfail else []) for c in CASES])
def test_fault(case: Case, ctx: Ctx):
    argv = case.command(ctx)
    env = {**ctx.env(), **(case.env(ctx) if case.env else {})}
    before = _snapshot(ctx)
    res = main_py(*argv, env=env)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == case.rc, res.stderr[-2000:]
    lines = _error_lines(res.stderr)
    assert len(lines) == case.lines or case.lines == 0 or (case.rc == 0 and len(lines) >= 1), res.stderr
    assert any(case.fragment.lower() in x.lower() for x in lines) or case.rc == 0 and not case.fragment, lines
    if case.rc:
        assert "error: " in lines[-1], lines
    assert _leftovers(ctx) == [], _leftovers(ctx)
    if case.rc:
        assert _complete_looking(ctx, before) == []
    if case.check:
        case.check(ctx, res)


# ------------------------------------------------------------------------------------------------ concurrency

def test_two_rematches_with_one_name(ctx: Ctx):
    """Two rematch of one run with one --name at once: one writes it, the other is refused in one line (exit 2);
    the folder is the winner's, whole."""
    run = ctx.run_copy()
    cmd = [sys.executable, str(REPO / "main.py"), "rematch", str(run), "--output", str(ctx.out), "--name", "same",
           "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    errs = [e for _, e in outs]
    assert all("Traceback" not in e for e in errs), errs
    assert codes == [0, 2], errs
    loser = next(e for p, (_, e) in zip(procs, outs) if p.returncode == 2)
    assert len(_error_lines(loser)) == 1 and ("exists already" in loser or "written meanwhile" in loser), loser
    m = json.loads((ctx.out / "same/run.json").read_text())
    assert m["matches"] and (ctx.out / "same" / m["report"]).is_file()
    assert sorted(p.name for p in ctx.out.iterdir()) == ["same"]


# ------------------------------------------------------------------------------------------------ kills

def _wait_for(proc: subprocess.Popen, cond: Callable[[], bool], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the command ended before {what}: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _tracked(root: Path) -> Callable[[], bool]:
    """True once a partial run folder under ``root`` has MOT rows of a video (its file is flushed when the video's
    pass ends: a run is then on its probe, an enrol on its embeddings and the gallery file)."""
    def cond() -> bool:
        try:
            return any(p.stat().st_size > 0 for p in root.glob("**/.*.partial-*/tracks/*.txt"))
        except OSError:  # a folder renamed or removed while we looked
            return False
    return cond


def _partial_exists(root: Path) -> Callable[[], bool]:
    def cond() -> bool:
        try:
            return any(root.glob("**/.*.partial-*"))
        except OSError:
            return False
    return cond


def _first_video_done(out: Path) -> Callable[[], bool]:
    def cond() -> bool:
        f = out / "videos.jsonl"
        return f.is_file() and f.read_text().count("\n") >= 1
    return cond


def _done_sequences_only(ds: Path) -> None:
    """Every sequence folder in an extract's dataset belongs to a video its videos.jsonl records as done."""
    status = [json.loads(x) for x in (ds / "videos.jsonl").read_text().splitlines()] \
        if (ds / "videos.jsonl").is_file() else []
    done = {r["id"] for r in status if r["status"] == "done"}
    seqs = [p.name for p in ds.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert all(s.rsplit("-", 1)[0] in done for s in seqs), (seqs, done)


KILLS = [  # (id, command, the point where the signal is sent, signal)
    ("run/SIGKILL-while-models-load", "run", "partial", signal.SIGKILL),
    ("run/SIGKILL-on-the-probe-video", "run", "tracked", signal.SIGKILL),
    ("run/SIGINT-on-the-probe-video", "run", "tracked", signal.SIGINT),
    ("run/SIGINT-while-models-load", "run", "partial", signal.SIGINT),
    ("enroll/SIGKILL-while-models-load", "enroll", "partial", signal.SIGKILL),  # its pass is too short to aim in
    ("enroll/SIGINT-while-models-load", "enroll", "partial", signal.SIGINT),
    ("extract/SIGKILL-after-the-first-video", "extract", "first-done", signal.SIGKILL),
    ("extract/SIGINT-after-the-first-video", "extract", "first-done", signal.SIGINT),
    # SIGTERM (docker stop, systemd) ends a command as Ctrl-C does (exit 143), also with Paddle loaded (its own
    # C++ handlers print a crash dump) and with worker processes (none leaves its scratch folder)
    ("run/SIGTERM-on-the-probe-video-paddle", "run-paddle", "tracked", signal.SIGTERM),
    ("enroll/SIGTERM-while-models-load", "enroll", "partial", signal.SIGTERM),
    ("extract/SIGTERM-two-paddle-workers", "extract-paddle", "first-done", signal.SIGTERM),
]


@pytest.mark.parametrize("cmd,point,sig", [pytest.param(c, p, s, id=i) for i, c, p, s in KILLS])
def test_killed(cmd: str, point: str, sig: int, ctx: Ctx):
    k = ctx.kit
    env = ctx.env()
    systmp = Path(env["TMPDIR"])
    paddle = ["--seg-model", str(k.shared / "weights/pphumanseg_v1_lite_192x192_with_softmax")]
    if cmd.startswith("run"):
        argv = _run(ctx, "--name", "k", gait=True) + (paddle if cmd == "run-paddle" else [])
        watch = ctx.out
    elif cmd == "enroll":
        argv = _enroll(ctx, k.clip, ctx.tmp / "g.sqlite")
        watch = systmp
    else:
        videos = [ctx.tmp / f"walk{i}.mp4" for i in range(3)]
        for v in videos:
            shutil.copyfile(k.clip, v)
        workers = "2" if cmd == "extract-paddle" else "1"
        argv = ["extract", *map(str, videos), "--out", str(ctx.out / "ds"), "--workers", workers,
                *k.models(gait=False), *(paddle if cmd == "extract-paddle" else []), "--quiet"]
        watch = ctx.out / "ds"
    # Ctrl-C as a terminal sends it: a suite started in the background (``cmd &``) has SIGINT ignored, and a child
    # would inherit that and never see the signal this row sends
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        cond = {"partial": _partial_exists, "tracked": _tracked, "first-done": _first_video_done}[point](watch)
        _wait_for(proc, cond, point)
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # extract's worker, had it outlived its parent
        except ProcessLookupError:
            pass
    assert "Traceback" not in err, err[-3000:]
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, err
        lines = _error_lines(err)
        assert len(lines) == 1 and lines[0].startswith("interrupted"), err
        assert "FatalError" not in out + err, (out + err)[-3000:]  # no native library's crash dump
        assert _leftovers(ctx) == [], _leftovers(ctx)
        assert _complete_looking(ctx, set()) == []
        assert list(systmp.glob("allinone-extract-*")) == []  # no worker's scratch folder
        if cmd.startswith("extract"):
            _done_sequences_only(ctx.out / "ds")
        return
    assert proc.returncode == -signal.SIGKILL
    left = _leftovers(ctx, empty=True)
    assert left, "a SIGKILL leaves the partial work behind (nothing can run after it)"
    assert _complete_looking(ctx, set()) == []
    # the next command of the same kind removes what is left of the killed one and says so in one line
    if cmd == "run":
        nxt = main_py(*_run(ctx, "--name", _existing(ctx, "taken")), env=env)
        assert nxt.returncode == 2 and "exists already" in nxt.stderr
    elif cmd == "enroll":
        nxt = main_py(*_enroll(ctx, k.clip, ctx.tmp), env=env)  # the gallery file is a folder: refused after
        assert nxt.returncode == 2 and "is a directory" in nxt.stderr
    else:
        _done_sequences_only(ctx.out / "ds")
        return  # extract's own .partial/ is cleared by its next run (commands/extract.py)
    assert "Traceback" not in nxt.stderr
    sweep = [x for x in _error_lines(nxt.stderr) if "leftover" in x]
    assert len(sweep) == 1 and "whose process is gone" in sweep[0], nxt.stderr
    assert _leftovers(ctx) == [], _leftovers(ctx)


def test_a_running_runs_partial_folder_is_left_alone(tmp_path):
    """The sweep removes only folders of processes that are gone: a live process's partial folder stays."""
    from allinone.io.run_folder import RunWriter
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f".a.partial-{sleeper.pid}"
        alive.mkdir()
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout.strip()
        dead = tmp_path / f".b.partial-{dead_pid}"
        dead.mkdir()
        with RunWriter(tmp_path, "c"):
            pass
        assert alive.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------------------------------------ live kills

def _live_snapshot(folder: Path) -> dict[str, bytes]:
    """The events and MOT files of a (killed) live run's folder, and its complete result videos, by name."""
    keep = {}
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and (rel.startswith("events-") or rel.startswith("tracks/")
                            or (p.suffix == ".mp4" and not p.name.startswith("."))):
            keep[rel] = p.read_bytes()
    return keep


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGKILL, id="live/SIGKILL-at-a-random-moment-then-another-run"),
                                 pytest.param(signal.SIGTERM, id="live/SIGTERM")])
def test_live_killed(sig: int, ctx: Ctx):
    """A live run with 2 s segments, killed at a random moment once a segment is complete. SIGTERM: it finishes
    as on Ctrl-C (exit 0, a complete run.json). SIGKILL: the next command into the same output folder recovers the
    folder instead of removing it (one line says so): every complete segment and every event still there, run.json
    incomplete and listing the segments, and the open segment's video decodable up to a bounded loss."""
    from allinone.config import LiveConfig
    k = ctx.kit
    url = _stream_once(ctx, k.shared / "fixtures/videos/demo4.mp4", loops=3)
    env = ctx.env()
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *_live(ctx, url, "--name", "k", "--segment", "6",
                                                                          "--reconnect", "2")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = ctx.out / f".k.partial-{proc.pid}"
    try:
        if sig == signal.SIGKILL:  # 2-5 s into the second segment: its video has frames to lose
            _wait_for(proc, lambda: (partial / "events-001.jsonl").exists(), "the first segment to be complete")
            time.sleep(float(np.random.default_rng().uniform(2.0, 5.0)))
        else:  # the stream's own MOT rows (the gallery's appear before the stream opens)
            _wait_for(proc, lambda: any(p.stat().st_size > 0 for p in partial.glob("tracks/*-001.txt")),
                      "people tracked on the stream")
        snap = _live_snapshot(partial)
        os.kill(proc.pid, sig)
        killed_at = time.time()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err[-3000:]
    run = ctx.out / "k"
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err
        assert "interrupted" in err and "FatalError" not in out + err
        m = json.loads((run / "run.json").read_text())
        assert "status" not in m and all(s["complete"] for s in m["live"]["walk"]["segments"])
        assert _leftovers(ctx) == []
        return
    assert proc.returncode == -signal.SIGKILL
    nxt = main_py(*_run(ctx, "--name", _existing(ctx, "taken")), env=env)
    assert nxt.returncode == 2 and "exists already" in nxt.stderr and "Traceback" not in nxt.stderr
    said = [x for x in _error_lines(nxt.stderr) if "recovered 1 killed live run" in x]
    assert len(said) == 1 and "k" in said[0], nxt.stderr
    assert not partial.exists() and _leftovers(ctx) == []
    m = json.loads((run / "run.json").read_text())
    assert m["status"] == "incomplete" and "killed" in m["error"]
    segs = m["live"]["walk"]["segments"]
    complete = [s for s in segs if s["complete"]]
    assert len(complete) >= 1 and len(segs) == len(complete) + 1 and not segs[-1]["complete"]
    # every event and MOT row written before the kill is still there (the files only grew since the snapshot)
    for rel, data in snap.items():
        if not rel.endswith(".mp4"):
            assert (run / rel).read_bytes().startswith(data), rel
    events = sum(len((run / s["events"]).read_text().splitlines()) for s in segs)
    assert events == sum(s["events_written"] for s in segs) >= sum(x.count(b"\n") for r, x in snap.items()
                                                                   if r.startswith("events-"))
    for s in complete:  # whole, as written
        assert (run / s["result_video"]).read_bytes() == snap[s["result_video"]]
        assert decodable_frames(run / s["result_video"]) == s["frames"] > 0
    # the open segment: its video under its own name, decodable up to its last keyframe: it lacks at most the
    # frames of keyframe_s of wall time (at the rate this run processed frames, with half again for its jitter;
    # never more than the stream's 30 frames/s), the encoder's queue of 8 and delay, and the frame being drawn.
    # It can hold more frames than its last MOT row (frames after the last person carry no rows), but never more
    # than the real-time stream sent between the segment's start (whole seconds) and the kill.
    last = segs[-1]
    drawn = last["last_frame"] - last["first_frame"] + 1  # up to its last frame with MOT rows
    rate = min(30.0, max(s["frames"] for s in complete) / 6)
    bound = int(np.ceil(1.5 * rate * LiveConfig.keyframe_s)) + 8 + 8 + 1
    sent = 30.0 * (killed_at - datetime.fromisoformat(last["started"]).timestamp() + 1.0)
    got = decodable_frames(run / last["result_video"])
    assert drawn - bound <= got <= sent and (got > 0 or drawn <= bound), (drawn, got, bound, sent, last)


# ------------------------------------------------------------------------------------------------ the watch service

def _watch_cmd(ctx: Ctx, output: Path, *extra: str) -> list[str]:
    """python main.py watch on two cameras: demo4 played over HTTP on the loopback, and demo4 as a looped file."""
    from tests.sinks.servers import free_port
    demo4 = ctx.kit.shared / "fixtures/videos/demo4.mp4"
    cfg = ctx.file("watch.yaml", f"gallery: {ctx.kit.enrolled}\noutput: {output}\nthreshold: 1.0e+9\n"
                                 f"listen: 127.0.0.1:{free_port()}\ncameras:\n"
                                 f"  - {{name: door, source: '{_stream_once(ctx, demo4, loops=8)}'}}\n"
                                 f"  - {{name: desk, source: '{demo4}'}}\n")
    return ["watch", str(cfg), *ctx.kit.models(), "--window-min", "10", "--reconnect", "2", "--quiet", *extra]


def _sightings(db: Path) -> list[tuple]:
    """(id, camera, track, crop, clip) of every stored sighting, read as the review page reads them."""
    import sqlite3
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT id, camera, track, crop, clip FROM sightings ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # created but its table not yet
        return []
    finally:
        con.close()


def _intact(db: Path) -> None:
    import sqlite3
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGKILL, id="watch/SIGKILL-after-a-sighting-then-a-restart"),
                                 pytest.param(signal.SIGTERM, id="watch/SIGTERM")])
def test_watch_killed(sig: int, ctx: Ctx):
    """The service, killed once it has stored a sighting. SIGTERM: every camera's segment closed, the session's
    run.json complete, exit 0. SIGKILL: the database whole (one transaction per sighting, WAL), every row that was
    there still there with its pictures and clip; a restart into the same output recovers the killed session and
    continues the sighting numbers."""
    out = ctx.out / "watch"
    db = out / "sightings.db"
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *_watch_cmd(ctx, out)], cwd=REPO,
                            env=ctx.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(proc, lambda: len(_sightings(db)) >= 1, "a sighting")
        if sig == signal.SIGKILL:
            time.sleep(float(np.random.default_rng().uniform(0.0, 2.0)))
        before = _sightings(db)
        os.kill(proc.pid, sig)
        out_text, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err[-3000:]
    _intact(db)
    after = _sightings(db)
    assert after[:len(before)] == before  # nothing stored was lost
    for _, _, _, crop, clip in after:
        assert (out / crop).is_file() and (clip is None or (out / clip).is_file())
    sessions = out / "sessions"
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err
        assert "interrupted" in err and f"{len(after)} sighting" in out_text
        (session,) = [d for d in sessions.iterdir()]
        m = json.loads((session / "run.json").read_text())
        assert "status" not in m and set(m["live"]) == {"door", "desk"}
        assert all(s["complete"] for cam in m["live"].values() for s in cam["segments"])
        assert _leftovers(ctx) == []
        return
    assert proc.returncode == -signal.SIGKILL
    res = main_py(*_watch_cmd(ctx, out, "--duration", "4"), env=ctx.env())
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert any("recovered 1 killed live run" in x for x in _error_lines(res.stderr)), res.stderr
    assert _leftovers(ctx) == []
    runs = [json.loads((d / "run.json").read_text()) for d in sorted(sessions.iterdir())]
    assert len(runs) == 2 and runs[0]["status"] == "incomplete" and "status" not in runs[1]
    _intact(db)
    again = _sightings(db)
    assert again[:len(after)] == after and [r[0] for r in again] == list(range(1, len(again) + 1))
