"""The bookkeeping of an ``extract`` dataset folder: its lock, its video ids, and videos.jsonl and manifest.parquet
made to agree with the sequence folders on disk.

    DATASET/.lock              {"pid", "host", "started", "create_time"} of the one driver working on the folder
    DATASET/videos.jsonl       one line per video: source path (resolved), id, done or failed, its manifest rows
    DATASET/manifest.parquet   one row per sequence, rebuilt from the done lines
    DATASET/<seq>/<id>/000/<seq>.pkl

Only the driver writes here (workers hand their sequences back in memory), one driver at a time (``DatasetLock``).
Before it moves a video's sequences into place it writes which they are to ``DATASET/.committing.json`` (fsynced),
and removes that journal once the video's line is in videos.jsonl.

``reconcile`` runs under the lock before any work, and never deletes because bookkeeping is absent: videos.jsonl
lines that are damaged (any line, not only a torn last one), or the whole file missing, are made up for from
manifest.parquet's rows; a done line whose folders are missing is dropped, so the video is extracted again; a
sequence folder no done line accounts for is removed only when the journal proves an interrupted run moved it into
place without recording its video (that video is extracted again), and otherwise moved aside, whole, to
``DATASET/.unaccounted/<time>/``. The two files are then rewritten from what is left, so they agree with the
sequences.

Video ids differ in more than letter case (and Unicode normalisation), so no two collide on a file system that
folds them (macOS, Windows).
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
import unicodedata
from pathlib import Path

from allinone.errors import UserError, first_line

log = logging.getLogger(__name__)

STATUS = "videos.jsonl"
MANIFEST = "manifest.parquet"
PARTIAL = ".partial"
LOCK = ".lock"
JOURNAL = ".committing.json"  # the sequences of the video being moved into place, until its line is written
UNACCOUNTED = ".unaccounted"  # sequence folders no record accounts for, set aside (never deleted)
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

def _parse_record(line: str) -> dict | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(rec, dict) and isinstance(rec.get("video"), str) and isinstance(rec.get("id"), str) \
        and isinstance(rec.get("rows", []), list)
    return rec if ok else None


def _read_status(out: Path) -> tuple[dict[str, dict], list[int]]:
    """videos.jsonl as {source path: its last line}, and the numbers of its damaged lines (a torn last line, a
    run killed mid-write, is not damage: it is ignored)."""
    recs: dict[str, dict] = {}
    f = out / STATUS
    if not f.is_file():
        return recs, []
    text = f.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    damaged = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        rec = _parse_record(line)
        if rec is not None:
            recs[rec["video"]] = rec
        elif n == len(lines) - 1 and not text.endswith("\n"):
            log.warning("%s: its last line was torn by an interrupted run; ignored", f)
        else:
            damaged.append(n + 1)
    return recs, damaged


def read_records(out: Path) -> dict[str, dict]:
    """videos.jsonl as {source path: its last line}; lines that are not records are skipped (``reconcile`` makes
    up for them from manifest.parquet)."""
    return _read_status(out)[0]


def _manifest_records(out: Path) -> dict[str, dict]:
    """Done records rebuilt from manifest.parquet's rows, grouped by source video ({} without a readable one)."""
    f = out / MANIFEST
    if not f.is_file():
        return {}
    try:
        import pyarrow.parquet as pq
        rows = pq.read_table(f).to_pylist()
    except Exception as exc:  # a damaged manifest: the records that remain are used, nothing is deleted for it
        log.warning("%s: not readable (%s); not used to rebuild the records", f, first_line(exc))
        return {}
    recs: dict[str, dict] = {}
    for row in rows:
        path, vid = row.get("source_video"), row.get("type")
        if isinstance(path, str) and isinstance(vid, str) and isinstance(row.get("sequence"), str):
            rec = recs.setdefault(path, {"video": path, "id": vid, "status": "done", "rows": [],
                                         "rebuilt_from": MANIFEST})
            rec["rows"].append(row)
    for rec in recs.values():
        rec["sequences"] = len(rec["rows"])
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


def write_journal(out: Path, rec: dict, sequences: list[str]) -> None:
    """Before a video's sequences are moved into place: which they are (fsynced), so that a run killed before
    recording the video lets the next one remove exactly them."""
    tmp = out / f".{JOURNAL}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"video": rec["video"], "id": rec["id"], "sequences": sequences}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out / JOURNAL)


def clear_journal(out: Path) -> None:
    """After the video's line is in videos.jsonl: its sequences are accounted for."""
    (out / JOURNAL).unlink(missing_ok=True)


def _staged(out: Path, done_paths: set[str]) -> set[str]:
    """The sequences the journal proves an interrupted run moved into place without recording their video."""
    try:
        doc = json.loads((out / JOURNAL).read_text(encoding="utf-8"))
        seqs, video = doc["sequences"], doc["video"]
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: not readable; nothing is removed on its word", out / JOURNAL)
        return set()
    return set() if video in done_paths else {x for x in seqs if isinstance(x, str)}


def _set_aside(out: Path, seqs: list[str]) -> Path:
    """Move sequence folders out of the dataset (never delete them) into DATASET/.unaccounted/<time>/."""
    aside = out / UNACCOUNTED / time.strftime("%Y%m%d-%H%M%S")
    n = 2
    while aside.exists():
        aside = aside.with_name(f"{aside.name.split('+')[0]}+{n}")
        n += 1
    aside.mkdir(parents=True)
    for seq in seqs:
        os.replace(out / seq, aside / seq)
    return aside


def reconcile(out: Path) -> tuple[dict[str, dict], dict[str, int]]:
    """Make videos.jsonl and manifest.parquet agree with the sequence folders (see the module's docstring).
    Call it holding the lock. Returns the records and counts of what was mended."""
    shutil.rmtree(out / PARTIAL, ignore_errors=True)  # staging of an interrupted run: never a sequence
    recs, damaged = _read_status(out)
    disk = scan_sequences(out)
    fixed = {"records_dropped": 0, "records_rebuilt": 0, "folders_removed": 0, "folders_set_aside": 0}
    rebuilt = {p: r for p, r in _manifest_records(out).items() if p not in recs}
    if rebuilt:  # lines lost (damaged, or the file gone): the manifest remembers those videos
        recs.update(rebuilt)
        fixed["records_rebuilt"] = len(rebuilt)
    if damaged or rebuilt or (disk and not (out / STATUS).is_file()):
        what = f"line(s) {', '.join(map(str, damaged[:5]))} damaged" if damaged else \
            "missing" if not (out / STATUS).is_file() else "lacking videos that manifest.parquet lists"
        log.warning("%s: %s; %d video record(s) rebuilt from manifest.parquet and the sequence files", out / STATUS,
                    what, len(rebuilt))
    done_by_id: dict[str, set[str]] = {}
    for path, rec in list(recs.items()):
        if rec.get("status") != "done":
            continue
        want = {r["sequence"] for r in rec.get("rows", []) if isinstance(r, dict) and "sequence" in r}
        if not want <= disk.get(rec["id"], set()):
            log.warning("%s: %d of its sequences are missing on disk; it will be extracted again", path,
                        len(want - disk.get(rec["id"], set())))
            del recs[path]
            fixed["records_dropped"] += 1
            continue
        done_by_id[rec["id"]] = want
    staged = _staged(out, {p for p, r in recs.items() if r.get("status") == "done"})
    loose = sorted(seq for vid, seqs in disk.items() for seq in seqs - done_by_id.get(vid, set()))
    for seq in (x for x in loose if x in staged):  # proven: moved into place by a run killed before its record
        shutil.rmtree(out / seq)
        fixed["folders_removed"] += 1
    if fixed["folders_removed"]:
        log.warning("%s: removed %d sequence folder(s) an interrupted run moved into place without recording "
                    "their video; it is extracted again", out, fixed["folders_removed"])
    unknown = [x for x in loose if x not in staged]
    if unknown:  # no record, no manifest row, no journal: kept, out of the dataset's way
        aside = _set_aside(out, unknown)
        fixed["folders_set_aside"] = len(unknown)
        log.warning("%s: %d sequence folder(s) no record accounts for were moved to %s (not deleted): look at them, "
                    "then delete them or put them back with their records", out, len(unknown), aside)
    clear_journal(out)
    if recs or (out / STATUS).exists():
        write_records(out, recs)
    write_manifest(out, recs)
    return recs, fixed


# ------------------------------------------------------------------------------------------------ video ids

def _stem(path: Path) -> str:
    return unicodedata.normalize("NFC", re.sub(r"[^\w.-]", "_", path.stem)) or "video"


def id_key(vid: str) -> str:
    """What a file system that folds case and Unicode normalisation sees of a name: two ids with one key would be
    one folder there."""
    return unicodedata.normalize("NFC", vid).casefold()


def assign_ids(paths: list[Path], recs: dict[str, dict], out: Path) -> dict[str, str]:
    """{resolved source path: video id}, unique across every run on this dataset: a path seen before keeps its id;
    a new one takes its stem, or, where that id is taken (by another source path, in this or an earlier run, or
    differing from it only in letter case or Unicode normalisation), its stem and a hash of its resolved path."""
    ids = {path: rec["id"] for path, rec in recs.items() if "id" in rec}
    taken = {id_key(v) for v in ids.values()} | {id_key(v) for v in scan_sequences(out)}
    for p in paths:
        key = str(p)
        if key in ids:
            continue
        vid = _stem(p)
        digest = hashlib.sha1(key.encode()).hexdigest()
        n = 8
        while id_key(vid) in taken:
            vid = f"{_stem(p)}-{digest[:n]}" if n <= len(digest) else f"{_stem(p)}-{digest}-{n}"
            n += 4
        ids[key] = vid
        taken.add(id_key(vid))
    return ids
