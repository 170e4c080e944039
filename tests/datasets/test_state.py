"""extract's dataset bookkeeping: one driver per dataset (two real processes), ids unique across runs, records
rebuilt from the folders on disk, workers that end with the driver (SIGTERM and SIGKILL of a real run), and a run
killed mid-way resumed into a dataset whose files agree."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from allinone.datasets.state import DatasetLock, assign_ids, read_records, reconcile
from allinone.errors import UserError
from tests.test_cli import REPO, run_main

HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from pathlib import Path; from allinone.datasets.state import DatasetLock;"
        "l = DatasetLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(120)")


def test_a_second_driver_is_refused_while_the_first_lives_and_a_stale_lock_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(REPO)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by extract PID {holder.pid}"):
            DatasetLock(tmp_path).acquire()
        res = run_main("extract", "nothing.mp4", "--out", str(tmp_path), "--quiet",
                       "--detector", "x.onnx", "--seg-model", "y.onnx")  # the CLI says so in one line, exit 2
        assert res.returncode == 2 and f"in use by extract PID {holder.pid}" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    # the owner was SIGKILLed: its lock stays behind, stale; the next driver takes it over and says so
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid
    with DatasetLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        assert f"taking over the lock of extract PID {holder.pid}" in caplog.text
    assert not (tmp_path / ".lock").exists()


def _seq(out: Path, seq: str, vid: str, n: int = 12) -> None:
    f = out / seq / vid / "000" / f"{seq}.pkl"
    f.parent.mkdir(parents=True)
    f.write_bytes(pickle.dumps(np.zeros((n, 64, 64), np.uint8)))


def _rec(path: str, vid: str, seqs: list[str]) -> dict:
    return {"video": path, "id": vid, "status": "done", "sequences": len(seqs),
            "rows": [{"sequence": s, "type": vid, "source_video": path} for s in seqs]}


def test_reconcile_makes_the_records_agree_with_the_folders(tmp_path):
    out = tmp_path
    _seq(out, "x-001", "x")                    # recorded, present: kept
    _seq(out, "y-001", "y")                    # on disk, no record, named by the journal: staged by a killed run
    _seq(out, "w-001", "w")                    # on disk, no record, no journal: set aside, not deleted
    _seq(out, "z-002", "z")                    # its record also lists z-001, which is gone
    (out / "notes").mkdir()                    # not a sequence: left alone
    (out / ".partial" / "v" / "v-001").mkdir(parents=True)
    (out / ".committing.json").write_text(json.dumps({"video": "/v/y.mp4", "id": "y", "sequences": ["y-001"]}))
    lines = [_rec("/v/x.mp4", "x", ["x-001"]), _rec("/v/z.mp4", "z", ["z-001", "z-002"]),
             {"video": "/v/f.mp4", "id": "f", "status": "failed", "error": "E"}]
    (out / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"video": "/v/tor')
    recs, fixed = reconcile(out)
    assert fixed == {"records_dropped": 1, "records_rebuilt": 0, "folders_removed": 1, "folders_set_aside": 2}
    assert sorted(p.name for p in out.iterdir()) == [".unaccounted", "manifest.parquet", "notes", "videos.jsonl",
                                                    "x-001"]
    aside = sorted(p.relative_to(out / ".unaccounted").parts[1] for p in (out / ".unaccounted").glob("*/*"))
    assert aside == ["w-001", "z-002"]  # whole, with their pickles
    assert len(list((out / ".unaccounted").glob("*/*/*/000/*.pkl"))) == 2
    assert set(read_records(out)) == {"/v/x.mp4", "/v/f.mp4"} == set(recs)
    assert pq.read_table(out / "manifest.parquet").column("sequence").to_pylist() == ["x-001"]


@pytest.mark.parametrize("damage", ["first-line", "middle-line", "missing"])
def test_lost_records_are_rebuilt_from_the_manifest_not_deleted(tmp_path, damage):
    # three done videos of two sequences each, recorded in both files; then videos.jsonl is damaged or lost
    out = tmp_path
    recs = [_rec(f"/v/{v}.mp4", v, [f"{v}-001", f"{v}-002"]) for v in ("a", "b", "c")]
    for r in recs:
        for row in r["rows"]:
            _seq(out, row["sequence"], r["id"])
    (out / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    reconcile(out)  # writes manifest.parquet from the records
    lines = (out / "videos.jsonl").read_text().splitlines(keepends=True)
    if damage == "missing":
        (out / "videos.jsonl").unlink()
    else:
        i = 0 if damage == "first-line" else 1
        lines[i] = lines[i][: len(lines[i]) // 2] + "\n"  # torn in the middle of the file, not at its end
        (out / "videos.jsonl").write_text("".join(lines))
    got, fixed = reconcile(out)
    assert fixed["records_rebuilt"] == (3 if damage == "missing" else 1) and fixed["folders_removed"] == 0
    assert sorted(got) == ["/v/a.mp4", "/v/b.mp4", "/v/c.mp4"] and all(r["status"] == "done" for r in got.values())
    assert _agree(out) == ["a-001", "a-002", "b-001", "b-002", "c-001", "c-002"]
    assert not (out / ".unaccounted").exists()


def test_video_ids_are_unique_across_runs(tmp_path):
    a1, a2, a3 = (str(tmp_path / d / "a.mp4") for d in ("cam1", "cam2", "cam3"))
    first = assign_ids([Path(a1)], {}, tmp_path)
    assert first == {a1: "a"}
    _seq(tmp_path, "a-001", "a")
    recs = {a1: _rec(a1, "a", ["a-001"])}
    later = assign_ids([Path(a2), Path(a1)], recs, tmp_path)
    assert later[a1] == "a" and later[a2].startswith("a-") and later[a2] != "a"
    # an id taken only by folders on disk (records lost) is taken too; and two new ones in one call differ
    again = assign_ids([Path(a2), Path(a3)], {}, tmp_path)
    assert len({"a", *again.values()}) == 3 and again[a2] == later[a2]  # the same path gets the same id


def test_video_ids_never_differ_only_in_case_or_normalisation(tmp_path):
    # names a case-folding, normalising file system (macOS, Windows) would take for one: their ids must differ
    # there, here in one call, across runs, and against folders already on disk
    names = ["Walk.mp4", "walk.mp4", "WALK.mp4", "caf\u00e9.mp4", "cafe\u0301.mp4", "CAF\u00c9.mp4", "stra\u00dfe.mp4",
             "STRASSE.mp4"]
    paths = [tmp_path / f"cam{i}" / n for i, n in enumerate(names)]
    ids = assign_ids(paths, {}, tmp_path)

    def folded(x: str) -> str:  # what such a file system compares: NFD (as HFS+ stores names), then case-folded
        import unicodedata
        return unicodedata.normalize("NFD", x).casefold()
    assert len({folded(v) for v in ids.values()}) == len(names)
    assert ids[str(paths[0])] == "Walk"  # the first keeps its stem
    _seq(tmp_path, "walk-001", "walk")  # a folder of another run, no record: its id is taken too
    later = assign_ids([tmp_path / "new" / "WaLk.mp4"], {}, tmp_path)
    assert folded(later[str(tmp_path / "new" / "WaLk.mp4")]) != "walk"


def _cmd(shared, out, *videos, workers="2"):
    return [sys.executable, str(REPO / "main.py"), "extract", *map(str, videos), "--out", str(out), "--quiet",
            "--workers", workers, "--detector", str(shared / "weights/yolox_nano.onnx"),
            "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx")]


def _workers_of(proc: subprocess.Popen, n: int, timeout: float = 120) -> list[psutil.Process]:
    t = time.time()
    while time.time() - t < timeout:
        kids = [k for k in psutil.Process(proc.pid).children(recursive=True)
                if "spawn_main" in " ".join(k.cmdline())]
        if len(kids) >= n:
            return kids
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError(f"no {n} worker processes after {timeout} s")


def _none_alive(procs: list[psutil.Process], within: float = 5.0) -> list[int]:
    gone, alive = psutil.wait_procs(procs, timeout=within)
    left = [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    return left


def _agree(out: Path) -> list[str]:
    """The sequences on disk, after checking that manifest.parquet and videos.jsonl list exactly them."""
    disk = sorted(p.parent.parent.parent.name for p in out.glob("*/*/000/*.pkl"))
    manifest = sorted(pq.read_table(out / "manifest.parquet").column("sequence").to_pylist())
    recs = read_records(out)
    listed = sorted(r["sequence"] for rec in recs.values() if rec["status"] == "done" for r in rec["rows"])
    assert disk == manifest == listed
    return disk


@pytest.fixture()
def videos(shared, tmp_path):
    v = shared / "fixtures/videos"
    # the same name from two folders: two videos, two ids
    for d in ("cam1", "cam2", "cam3"):
        (tmp_path / d).mkdir()
        shutil.copy(v / "demo2.mp4", tmp_path / d / ("walk.mp4" if d != "cam3" else "other.mp4"))
    return [v / "demo1.mp4", tmp_path / "cam1/walk.mp4", tmp_path / "cam3/other.mp4", tmp_path / "cam2/walk.mp4"]


def test_sigterm_stops_the_workers_and_a_killed_run_resumes_into_an_agreeing_dataset(shared, tmp_path, videos):
    out = tmp_path / "ds"
    # 1. SIGTERM while the workers run: exit 143, no worker left 5 s later, the files agree with the folders
    p = subprocess.Popen(_cmd(shared, out, *videos), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kids = _workers_of(p, 2)
    time.sleep(3)
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 143, p.stderr.read()
    assert "interrupted (SIGTERM)" in p.stderr.read()
    assert _none_alive(kids) == []
    assert not (out / ".lock").exists()
    _agree(out)
    # 2. SIGKILL once the first video is recorded: the lock stays, nothing cleans up; the workers still go
    p = subprocess.Popen(_cmd(shared, out, *videos), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kids = _workers_of(p, 2)
    t = time.time()
    while not any(r["status"] == "done" for r in read_records(out).values()) and time.time() - t < 300:
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.1)
    p.kill()
    p.wait()
    assert _none_alive(kids) == []
    done_before = {k for k, r in read_records(out).items() if r["status"] == "done"}
    assert done_before and (out / ".lock").exists()
    # 3. resume: stale lock taken over, the finished videos skipped, every video done, the files agree
    res = subprocess.run(_cmd(shared, out, *videos), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "taking over the lock" in res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == len(done_before) and not summary["failed"]
    seqs = _agree(out)
    recs = read_records(out)
    paths = {str(Path(v).resolve()) for v in videos}
    assert set(recs) == paths and all(r["status"] == "done" for r in recs.values())
    ids = {r["id"] for r in recs.values()}
    assert len(ids) == 4 and "walk" in ids  # the two walk.mp4 have their own ids
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {r["source_video"] for r in rows} <= paths
    walks = {r["source_video"] for r in rows if r["type"].startswith("walk")}
    assert walks == {str((tmp_path / d / "walk.mp4").resolve()) for d in ("cam1", "cam2")}
    # the two copies of one video give the same silhouettes under their own ids
    by_type = {}
    for s in seqs:
        typ = next(r["type"] for r in rows if r["sequence"] == s)
        by_type.setdefault(typ, []).append((out / s / typ / "000" / f"{s}.pkl").read_bytes())
    w1, w2 = (by_type[i] for i in sorted(i for i in by_type if i.startswith("walk")))
    assert w1 == w2 and w1
