"""The run folder: built under a temporary name, renamed into place only when the run has fully succeeded."""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np

from allinone.errors import ENVIRONMENT_ERRNO, UserError, shorten

log = logging.getLogger(__name__)

MANIFEST = "run.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (name + content, sorted) so a model folder has one hash too."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f.relative_to(p).as_posix().encode())
        h.update(bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


PARTIAL_RUN = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)$")  # RunWriter's folder while a run works
ENROL_TEMP = re.compile(r"^allinone-enrol-(?P<pid>\d+)-")  # enroll's temporary folder (in the system temp folder)


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (ours counts; one we may not signal counts too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def sweep_leftovers(root: str | Path, pattern: re.Pattern = PARTIAL_RUN, what: str = "interrupted run") -> list[str]:
    """Remove the folders in ``root`` whose name matches ``pattern`` (with a ``pid`` group) and whose process is
    gone (killed, or the machine went down), saying so in one warning; returns their names. Folders of running
    processes are left alone, and a killed live run's folder (its journal or events: work that cannot be made
    again) is never removed: it is recovered as an incomplete run (io/recovery.py), with its own warning."""
    from allinone.io.recovery import recover, recoverable
    root = Path(root)
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    gone, kept = [], []
    for entry in entries:
        m = pattern.match(entry.name)
        if not (m and entry.is_dir(follow_symlinks=False) and not pid_alive(int(m.group("pid")))):
            continue
        if pattern is PARTIAL_RUN and recoverable(Path(entry.path)):
            try:
                kept.append(recover(Path(entry.path), m.group("name"), int(m.group("pid"))).name)
            except OSError as exc:  # left exactly as it is (never removed): say where it is
                log.warning("%s: a killed live run's folder could not be recovered (%s); it is left as it is",
                            entry.path, exc)
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        gone.append(entry.name)
    if gone:
        log.warning("%s: removed %d leftover folder(s) of %s(s) whose process is gone: %s", root, len(gone), what,
                    ", ".join(sorted(gone)))
    if kept:
        log.warning("%s: recovered %d killed live run(s), not removed (their segments and events kept, run.json "
                    "status incomplete): %s", root, len(kept), ", ".join(sorted(kept)))
    return gone


def default_run_name() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def temp_beside(path: Path) -> Path:
    """A temporary name in ``path``'s folder (same file system: the final rename is atomic) whose length does not
    grow with ``path``'s name, which may already be as long as the file system takes; ``path``'s suffix is kept
    where short (a video writer picks its container by it)."""
    suffix = path.suffix if len(path.suffix) <= 8 else ""
    return path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that the file system holding ``folder`` (or its nearest existing parent)
    takes."""
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(os.pathconf(p, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def check_name_lengths(folder: Path, names: list[tuple[str, str]]) -> None:
    """(file name to be written in ``folder`` or below, the input it is named after): a UserError naming the input
    whose output name the file system would refuse, so that it fails before any work rather than at its end."""
    limit = name_max(folder)
    for name, source in names:
        n = len(os.fsencode(name))
        if n > limit:
            raise UserError(f"too long a name for the output: the file {shorten(name, 60)!r} written for it would "
                            f"have {n} bytes, over the {limit} the output's file system takes (rename it)", source)


def writable_folder(path: Path, what: str) -> Path:
    """``path`` created where missing and checked writable, by one rule for every command: a fault of the machine
    (read-only file system, no permission, full disk) raises OSError, exit 1 through errors.fault_line; a path that
    cannot be a folder (under a file, a file itself) is the user's input: UserError, exit 2."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} is a file, not a folder", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNO:
            raise
        raise UserError(f"{what} cannot be created ({exc.strerror or exc})", path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(path).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(path))
    return path


class RunWriter:
    """Owns one run folder. Files go to ``<root>/.<name>.partial`` while the run works; ``finalize`` writes
    run.json last and renames the folder to ``<root>/<name>``. Leaving the ``with`` block by an exception (or
    Ctrl-C) removes the partial folder, so nothing that looks complete is left behind — except after
    ``keep_if_interrupted`` (live runs): then the folder is finalized with run.json ``status: "incomplete"``. A
    killed run's partial folder is removed by the next RunWriter in the same root (``sweep_leftovers``), except a
    live run's, which is recovered (io/recovery.py)."""

    def __init__(self, root: str | Path, name: str | None = None, default: str | None = None) -> None:
        """``name``: the user's (refused if it exists); else ``default`` (a timestamp when None), numbered -2, -3 …
        where it exists."""
        self.root = Path(root)
        explicit = name is not None
        name = name or default or default_run_name()
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise UserError(f"run name {name!r} must be a plain folder name")
        writable_folder(self.root, "output folder")
        sweep_leftovers(self.root)
        final = self.root / name
        if final.exists():
            if explicit:
                raise UserError("a run of this name exists already (choose another --name)", final)
            n = 2
            while (self.root / f"{name}-{n}").exists():
                n += 1
            final = self.root / f"{name}-{n}"
        self.final = final
        self.name = final.name
        self.dir = self.root / f".{self.name}.partial-{os.getpid()}"
        try:
            self.dir.mkdir()
        except OSError as exc:
            if exc.errno in ENVIRONMENT_ERRNO:
                raise
            raise UserError(f"cannot create the run folder ({exc.strerror or exc})", self.dir) from None
        self.finalized = False
        self._incomplete: dict | None = None

    # -- paths ------------------------------------------------------------------------------------------------
    def path(self, rel: str | Path) -> Path:
        """Absolute path of ``rel`` inside the (partial) run folder, parents created."""
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # -- writers ----------------------------------------------------------------------------------------------
    def mot_writer(self, rel: str) -> "MotWriter":
        return MotWriter(self.path(rel))

    def write_npy(self, rel: str, array: np.ndarray) -> str:
        np.save(self.path(rel), array)
        return rel

    def write_csv(self, rel: str, header: list[str], rows: list[list]) -> str:
        with open(self.path(rel), "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        return rel

    def finalize(self, manifest: dict) -> Path:
        """Write run.json (atomically, strict JSON: a NaN is a bug) and move the folder into place; a UserError
        (and the partial folder removed) when another process took the name meanwhile."""
        return self.finalize_json(MANIFEST, manifest)

    def finalize_json(self, name: str, manifest: dict) -> Path:
        """Write the folder's manifest ``name`` (atomically) and move the folder into place."""
        from allinone.io.recovery import JOURNAL
        (self.dir / JOURNAL).unlink(missing_ok=True)
        tmp = temp_beside(self.dir / name)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, self.dir / name)
        try:
            os.replace(self.dir, self.final)  # a folder of the name made meanwhile is never replaced (not empty)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise UserError("another run of this name was written meanwhile (two runs with one --name at once): "
                            "this one was not kept; run it again with another --name", self.final) from None
        self.finalized = True
        return self.final

    def keep_if_interrupted(self, manifest: dict) -> None:
        """From now on, leaving the ``with`` block by an exception finalizes the folder as incomplete (``manifest``,
        read then, plus the error) instead of deleting it: a live run's files cannot be made again. ``manifest`` is
        also kept in the folder as its journal (``journal``), for a later run to recover it if this one is
        killed."""
        self._incomplete = manifest
        self.journal()

    def journal(self) -> None:
        """Rewrite the journal (the manifest given to ``keep_if_interrupted``, as it is now) atomically; nothing
        before keep_if_interrupted."""
        from allinone.io.recovery import JOURNAL
        if self._incomplete is None:
            return
        tmp = self.dir / f"{JOURNAL}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self._incomplete, fh, allow_nan=False)
        os.replace(tmp, self.dir / JOURNAL)

    def finalize_incomplete(self, error: BaseException) -> Path:
        """Write run.json with ``status: "incomplete"`` and the error, and move the folder into place."""
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return self.finalize({**(self._incomplete or {}), "status": "incomplete", "error": text})

    def abort(self) -> None:
        if not self.finalized and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._incomplete is not None and not self.finalized:
            try:
                path = self.finalize_incomplete(exc)
                log.error("the run stopped before it was complete (%s): what was written so far is in %s",
                          exc or exc_type.__name__, path)
            except BaseException as again:  # even then nothing is deleted (a full disk cannot take run.json)
                kept = self.final.with_name(self.final.name + ".incomplete")  # a rename needs no space
                try:
                    os.replace(self.dir, kept)
                except OSError:
                    kept = self.dir  # still there; the next run's sweep would remove it, so say where it is
                log.error("the incomplete run could not be finalized (%s): its files stay in %s", again, kept)
            return
        if exc_type is not None or not self.finalized:
            self.abort()


class MotWriter:
    """MOT rows written frame by frame as the video streams (``frame,id,x,y,w,h,score,-1,-1,-1``, frames from 1),
    so the boxes of a long video live on disk, not in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "w", encoding="utf-8")

    def write(self, index: int, xyxy: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> None:
        for (x1, y1, x2, y2), s, i in sorted(zip(xyxy.tolist(), scores.tolist(), ids.tolist()), key=lambda r: r[2]):
            self.fh.write(f"{index + 1},{i},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1\n")

    def close(self) -> None:
        self.fh.close()

    def drop_tracks(self, ids: set[int]) -> None:
        """Rewrite the (closed) file without the rows of ``ids``."""
        if not ids:
            return
        tmp = temp_beside(self.path)
        with open(self.path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            for line in src:
                if int(line.split(",", 2)[1]) not in ids:
                    dst.write(line)
        os.replace(tmp, self.path)


def read_mot_by_frame(path: Path):
    """Yield (frame index 0-based, [(track id, xyxy float32 [4]), ...]) in frame order, streaming the file; frames
    without rows are not yielded."""
    current, rows = None, []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            f, i, x, y, w, h = line.split(",")[:6]
            f = int(f) - 1
            if current is not None and f != current:
                yield current, rows
                rows = []
            current = f
            x, y, w, h = float(x), float(y), float(w), float(h)
            rows.append((int(i), np.array([x, y, x + w, y + h], np.float32)))
    if current is not None:
        yield current, rows
