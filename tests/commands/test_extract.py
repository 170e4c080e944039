"""extract: the shared videos into an OpenGait-format dataset with both engines (a local Ray with 2 CPUs, started
by the test), identical pickles, failures recorded, finished videos skipped on a re-run, and evaluate reading it."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from allinone.evaluate.dataset import list_sequences
from tests.test_cli import REPO, run_main

VIDEOS = ("demo1.mp4", "demo2.mp4", "demo4.mp4")


def _extract(shared, out, *extra):
    v = shared / "fixtures/videos"
    return run_main("extract", str(v / "demo1.mp4"), str(v / "demo2.mp4"), str(v / "demo4.mp4"), *extra,
                    "--out", str(out), "--detector", str(shared / "weights/yolox_nano.onnx"),
                    "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--quiet")


@pytest.fixture(scope="module")
def local(tmp_path_factory, shared):
    out = tmp_path_factory.mktemp("local") / "ds"
    broken = out.parent / "broken.mp4"
    broken.write_bytes(b"not a video")
    listing = out.parent / "more.txt"  # a list naming a file that is not there: recorded as failed, the rest done
    listing.write_text(f"# one missing\n{out.parent / 'gone.mp4'}\n")
    res = _extract(shared, out, str(broken), "--workers", "2", "--list", str(listing))
    return out, broken, res


def _pickles(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.pkl"))}


def test_local_engine_writes_an_opengait_dataset(local):
    out, broken, res = local
    assert res.returncode == 1  # one video failed; the others were done
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    gone = str((out.parent / "gone.mp4").resolve())
    assert summary["failed"] == [str(broken.resolve()), gone] and summary["processed"] == 4
    status = [json.loads(x) for x in (out / "videos.jsonl").read_text().splitlines()]
    bad = next(s for s in status if s["video"] == str(broken.resolve()))
    assert bad["status"] == "failed" and "cannot be opened" in bad["error"]
    assert next(s for s in status if s["video"] == gone)["error"] == "video not found"
    pk = _pickles(out)
    assert len(pk) >= 3
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())  # nothing half-written left
    for rel, data in pk.items():
        seq, typ, view, name = rel.split("/")
        assert name == f"{seq}.pkl" and view == "000" and seq.startswith(typ + "-")
        arr = pickle.loads(data)
        assert arr.dtype == np.uint8 and arr.shape[1:] == (64, 64) and len(arr) >= 10
    table = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted(r["sequence"] for r in table) == sorted(rel.split("/")[0] for rel in pk)
    row = table[0]
    assert {"source_video", "track", "first_frame", "last_frame", "frames_kept", "dropped_border"} <= set(row)
    assert row["frames_kept"] == pickle.loads(pk[next(r for r in pk if r.startswith(row["sequence"]))]).shape[0]


def test_ray_engine_gives_the_same_dataset_on_a_loopback_only_local_ray(local, shared, tmp_path):
    """The local Ray that extract starts itself: the same pickles, and every Ray process listens on 127.0.0.1 only
    (Ray's default would bind all interfaces and advertise the machine's outside address)."""
    import psutil
    pytest.importorskip("ray")
    out, _, _ = local
    v = shared / "fixtures/videos"
    p = subprocess.Popen([sys.executable, str(REPO / "main.py"), "extract", *(str(v / n) for n in VIDEOS),
                          "--engine", "ray", "--workers", "2", "--out", str(tmp_path / "ds"), "--quiet",
                          "--detector", str(shared / "weights/yolox_nano.onnx"),
                          "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listening = set()
    while p.poll() is None:
        try:
            for k in [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]:
                listening |= {c.laddr.ip for c in k.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
        time.sleep(0.3)
    _, err = p.communicate()
    assert p.returncode == 0, err[-3000:]
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
    assert _pickles(tmp_path / "ds") == _pickles(out)


def test_rerun_skips_finished_videos_and_evaluate_reads_the_set(local, shared):
    out, broken, _ = local
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pkl")}
    res = _extract(shared, out, str(broken), "--workers", "1")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == 3 and summary["processed"] == 1  # only the failed one is tried again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pkl")} == before
    seqs = list_sequences(out, {"TEST_SET": sorted(p.name for p in out.iterdir() if p.is_dir()
                                                   and not p.name.startswith("."))})
    assert len(seqs) == len(before) and all(s.view == "000" for s in seqs)


def test_cut44_stores_the_64x44_form(shared, tmp_path):
    v = shared / "fixtures/videos"
    res = run_main("extract", str(v / "demo2.mp4"), "--cut44", "--out", str(tmp_path / "ds"), "--quiet",
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--workers", "1")
    assert res.returncode == 0, res.stderr
    arr = pickle.loads(next((tmp_path / "ds").rglob("*.pkl")).read_bytes())
    assert arr.shape[1:] == (64, 44) and arr.dtype == np.uint8
