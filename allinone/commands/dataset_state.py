"""The bookkeeping of an ``extract`` dataset folder: its lock, its video ids, and videos.jsonl and manifest.parquet
made to agree with the sequence folders on disk.

    DATASET/.lock              {"pid", "host", "started", "create_time"} of the one driver working on the folder
    DATASET/videos.jsonl       one line per video: source path (resolved), id, done or failed, its manifest rows
    DATASET/manifest.parquet   one row per sequence, rebuilt from the done lines
    DATASET/<seq>/<id>/000/<seq>.pkl

Only the driver writes here (workers hand their sequences back in memory), one driver at a time (``DatasetLock``).
``reconcile`` runs under the lock before any work: a sequence folder no done line accounts for (a run killed between
moving a video's sequences into place and recording it) is removed and its video extracted again; a done line whose
folders are missing is dropped, with the rest of that video's folders, so the video is extracted again; the two
files are then rewritten from what is left, so they agree with the sequences.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

from allinone.errors import UserError

log = logging.getLogger(__name__)

STATUS = "videos.jsonl"
MANIFEST = "manifest.parquet"
PARTIAL = ".partial"
LOCK = ".lock"
VIEW = "000"


# ------------------------------------------------------------------------------------------------ the lock

def _proc_start(pid: int) -> float | None:
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class DatasetLock:
    """One driver per dataset folder: ``DATASET/.lock`` created with O_EXCL, holding the owner's PID and host.

    A lock whose process is gone (same host, no such PID, or a PID reused by a newer process) is taken over with a
    one-line warning; a live owner, or one on another host (whose liveness cannot be seen from here), is refused."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK
        self.held = False

    def _create(self) -> bool:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "create_time": _proc_start(os.getpid())}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written this instant, or garbage: judged by its age below

    def acquire(self) -> "DatasetLock":
        for _ in range(20):
            if self._create():
                self.held = True
                return self
            owner = self._owner()
            if owner is None:
                continue  # released between our two looks
            pid, host = owner.get("pid"), owner.get("host")
            if not owner:
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 5:
                    time.sleep(0.2)
                    continue
                alive = False
            elif host != socket.gethostname():
                raise UserError(f"in use by extract PID {pid} on host {host} since {owner.get('started')} "
                                f"(cannot check another host; delete {self.path} if that run is gone)",
                                self.path.parent)
            else:
                started = _proc_start(int(pid))
                want = owner.get("create_time")
                alive = started is not None and (want is None or abs(started - want) < 1.0)
            if alive:
                raise UserError(f"in use by extract PID {pid} on this host since {owner.get('started')} "
                                f"(one driver per dataset)", self.path.parent)
            # stale: move it aside under a name of our own (only one taker wins the rename), then try again
            aside = self.path.with_name(f"{LOCK}.stale-{os.getpid()}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            log.warning("%s: taking over the lock of extract PID %s on %s (no longer running)",
                        self.path.parent, pid, host)
        raise UserError("cannot take the dataset lock (it keeps changing hands)", self.path)

    def release(self) -> None:
        if self.held:
            owner = self._owner() or {}
            if owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "DatasetLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------ records

def read_records(out: Path) -> dict[str, dict]:
    """videos.jsonl as {source path: its last line}; a torn last line (a run killed mid-write) is ignored."""
    recs: dict[str, dict] = {}
    f = out / STATUS
    if not f.is_file():
        return recs
    lines = f.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            recs[rec["video"]] = rec
        except (ValueError, KeyError, TypeError):
            log.warning("%s: line %d is not a record (torn by an interrupted run?); ignored", f, n + 1)
    return recs


def seq_file(out: Path, seq: str, vid: str) -> Path:
    return out / seq / vid / VIEW / f"{seq}.pkl"


def scan_sequences(out: Path) -> dict[str, set[str]]:
    """{video id: its sequence ids} from the folders ``<seq>/<id>/000/<seq>.pkl`` on disk (anything else is left
    alone)."""
    found: dict[str, set[str]] = {}
    for d in out.iterdir():
        if not d.is_dir() or d.name.startswith("."):
            continue
        for t in d.iterdir():
            if t.is_dir() and d.name.startswith(t.name + "-") and (t / VIEW / f"{d.name}.pkl").is_file():
                found.setdefault(t.name, set()).add(d.name)
    return found


def write_records(out: Path, recs: dict[str, dict]) -> None:
    tmp = out / f".{STATUS}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in recs.values():
            fh.write(json.dumps(rec, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out / STATUS)


def write_manifest(out: Path, recs: dict[str, dict]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [r for rec in recs.values() if rec.get("status") == "done" for r in rec.get("rows", [])]
    rows.sort(key=lambda r: r["sequence"])
    tmp = out / f".{MANIFEST}.tmp"
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({"sequence": pa.array([], pa.string())}), tmp)
    os.replace(tmp, out / MANIFEST)
    return len(rows)


def reconcile(out: Path) -> tuple[dict[str, dict], dict[str, int]]:
    """Make videos.jsonl and manifest.parquet agree with the sequence folders (see the module's docstring).
    Call it holding the lock. Returns the records and counts of what was mended."""
    shutil.rmtree(out / PARTIAL, ignore_errors=True)  # staging of an interrupted run: never a sequence
    recs = read_records(out)
    disk = scan_sequences(out)
    fixed = {"records_dropped": 0, "folders_removed": 0}
    done_by_id: dict[str, set[str]] = {}
    for path, rec in list(recs.items()):
        if rec.get("status") != "done":
            continue
        want = {r["sequence"] for r in rec.get("rows", [])}
        if not want <= disk.get(rec["id"], set()):
            log.warning("%s: %d of its sequences are missing on disk; it will be extracted again", path,
                        len(want - disk.get(rec["id"], set())))
            del recs[path]
            fixed["records_dropped"] += 1
            continue
        done_by_id[rec["id"]] = want
    for vid, seqs in disk.items():
        for seq in sorted(seqs - done_by_id.get(vid, set())):
            shutil.rmtree(out / seq)
            fixed["folders_removed"] += 1
    if fixed["folders_removed"]:
        log.warning("%s: removed %d sequence folder(s) that no finished video accounts for (an interrupted run); "
                    "their videos are extracted again", out, fixed["folders_removed"])
    if recs or (out / STATUS).exists():
        write_records(out, recs)
    write_manifest(out, recs)
    return recs, fixed


# ------------------------------------------------------------------------------------------------ video ids

def _stem(path: Path) -> str:
    return re.sub(r"[^\w.-]", "_", path.stem) or "video"


def assign_ids(paths: list[Path], recs: dict[str, dict], out: Path) -> dict[str, str]:
    """{resolved source path: video id}, unique across every run on this dataset: a path seen before keeps its id;
    a new one takes its stem, or, where that id is taken (by another source path, in this or an earlier run),
    its stem and a hash of its resolved path."""
    ids = {path: rec["id"] for path, rec in recs.items() if "id" in rec}
    taken = set(ids.values()) | set(scan_sequences(out))
    for p in paths:
        key = str(p)
        if key in ids:
            continue
        vid = _stem(p)
        digest = hashlib.sha1(key.encode()).hexdigest()
        n = 8
        while vid in taken:
            vid = f"{_stem(p)}-{digest[:n]}" if n <= len(digest) else f"{_stem(p)}-{digest}-{n}"
            n += 4
        ids[key] = vid
        taken.add(vid)
    return ids
