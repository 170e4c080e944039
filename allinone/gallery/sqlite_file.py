"""The gallery file as an SQLite file: recognised before anything is written, created atomically, errors told apart.

A gallery file carries a marker, SQLite's ``application_id`` (APPLICATION_ID), set when the file is created. Before
any write or pragma that writes, the file is inspected read-only (its 100-byte header, where the marker is; for an
unmarked file its table names through an ``?mode=ro`` connection, ``immutable`` for a WAL file): a file that is not SQLite, or another application's SQLite database, is refused and left exactly as it
was. Files made before the marker existed (application_id 0 with exactly allinone's tables) are accepted and get the
marker at their next change.

SQLite's errors are told apart for the user: a file that is not a database at all is "not a gallery file"; a
gallery whose pages are damaged ("malformed") is "damaged" (see ``gallery check`` and ``gallery backup``); a disk or
permission failure is said to be one, never blamed on the file.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import quote

from allinone.errors import EnvironmentFault, UserError

APPLICATION_ID = 0x416C4931  # "AlI1"
TABLES = {"meta", "identities", "tracks"}
SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_error(exc: BaseException, path: Path) -> UserError:
    """The user's one-line account of an sqlite3 error on the gallery file ``path``."""
    text = str(exc)
    low = text.lower()
    if "malformed" in low or "file is not a database" in low or "corrupt" in low:
        return UserError(f"the gallery file is damaged ({text}): run python main.py gallery check to see it, and "
                         "restore it from a backup (python main.py gallery backup makes one)", path)
    if any(w in low for w in ("disk i/o", "unable to open", "readonly", "read-only", "permission", "full",
                              "locked", "busy")):
        return EnvironmentFault(f"cannot use the gallery file: {text} (a problem of the disk, its space, "
                                "permissions or another program holding it, not of the file's contents)", path)
    return UserError(f"gallery file error: {text}", path)


def ro_uri(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def inspect(path: Path) -> str:
    """What ``path`` is, found without writing anything: "empty" (0 bytes), "gallery" (marked), "legacy" (an
    allinone gallery from before the marker); anything else raises a UserError that says what it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise UserError(f"cannot read the gallery file ({exc.strerror or exc})", path) from None
    if not head:
        return "empty"
    if not head.startswith(SQLITE_HEADER) or len(head) < 100:
        raise UserError("not a gallery file (not an SQLite database at all); it is left unchanged", path)
    app = int.from_bytes(head[68:72], "big", signed=True)  # the header's application_id: no SQLite call needed
    tables: set[str] = set()
    if app == 0:  # unmarked: an allinone gallery from before the marker, or another application's database
        # immutable=1 for a WAL file: a read-only open of one could otherwise create -wal and -shm files beside it
        uri = ro_uri(path) + ("&immutable=1" if head[18] == 2 else "")
        try:
            con = sqlite3.connect(uri, uri=True, timeout=30)
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, path) from None
    if app == APPLICATION_ID:
        return "gallery"
    if app == 0 and tables - {"sqlite_sequence"} == TABLES:
        return "legacy"
    what = f"application_id {app:#x}" if app else \
        f"no application_id, tables {', '.join(sorted(tables)[:5]) or 'none'}"
    raise UserError(f"not an allinone gallery file (an SQLite database of another application: {what}); it is left "
                    "unchanged", path)


def create_atomically(path: Path, schema: str, meta: dict[str, str]) -> None:
    """A new gallery file at ``path`` (marker, schema, WAL mode, ``meta``), made under a temporary name and linked
    into place, so ``path`` is never a half-made file; if another process made it first, theirs is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    os.close(fd)
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.executescript(schema)
            con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()  # the last connection: its WAL is checkpointed into the file and removed
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path) from None
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(tmp + suffix).unlink(missing_ok=True)


def backup(db: sqlite3.Connection, target: Path, source: Path) -> None:
    """SQLite's online backup of ``db`` into a new file ``target`` (refused if it exists), written under a
    temporary name and moved into place when complete."""
    if target.exists():
        raise UserError("exists already: give a new file name for the backup", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        dst = sqlite3.connect(tmp)
        try:
            db.backup(dst)
            ok = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
        if ok != "ok":
            raise UserError(f"the backup does not check out ({ok}): the gallery file may be damaged", source)
        os.replace(tmp, target)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, source) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def check(path: Path) -> str:
    """One line on the file: "ok: N identities, M tracks, ..." or "damaged: ..." (SQLite's integrity check, read
    only); a file that is not a gallery raises the UserError ``inspect`` gives."""
    if not path.is_file():
        raise UserError("gallery file not found", path)
    if inspect(path) == "empty":
        raise UserError("an empty file, not a gallery file", path)
    try:
        con = sqlite3.connect(ro_uri(path), uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path) from None
    try:
        found = [r[0] for r in con.execute("PRAGMA integrity_check(20)")]
        if found != ["ok"]:
            return f"damaged: {len(found)} problem(s) found by SQLite's integrity check, the first: {found[0]}"
        n = int(con.execute("SELECT COUNT(*) FROM identities").fetchone()[0])
        k = int(con.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])
        return (f"ok: {n} {'identity' if n == 1 else 'identities'}, {k} {'track' if k == 1 else 'tracks'}, SQLite's "
                "integrity check passed")
    except sqlite3.DatabaseError as exc:
        if "malformed" in str(exc).lower() or "not a database" in str(exc).lower():
            return f"damaged: {exc}"
        raise sqlite_error(exc, path) from None
    finally:
        con.close()
