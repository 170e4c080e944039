"""The sightings database of the watch service: every track that ended on a camera, with its decision, its media
and its embedding, in one SQLite file in the output folder (SIGHTINGS_FILE).

Durability. WAL journal, ``synchronous=FULL``, one transaction per sighting. With WAL, SQLite never leaves the file
damaged when the process dies (kill -9 included): a transaction is in the database once its commit record is in
the WAL, and a half-written one is ignored at the next open. NORMAL would already survive kill -9 (the OS keeps
what was written), but a power cut could take back the last commits, after their events went out on MQTT and
webhooks; FULL syncs the WAL at each commit, so a sighting told to anyone is on disk. Its cost, one fsync per
sighting, is small at one sighting per ended track.

Numbering. Sighting ids are ``AUTOINCREMENT``: never reused, even after retention deleted the newest rows, so an id
quoted in an event or a link always means the same sighting. Unknown ids (U1, U2, ...) come from a counter kept in
the database (``meta``), so a restart continues them too.

Retention deletes rows first and their files after (``retain``): the rows and the list of their files change in
one transaction, and the files are removed from that list afterwards, again after a crash. So a row never points at
a missing file, and a crash leaves at worst files already unlisted by any row, removed at the next ``retain``.

Over 400 lines: one record (Sighting) and the one class that owns the file, whose writes, queries, retention and
unknown ids share its connection, its lock and its transactions.
"""
from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.parse import quote

import numpy as np

from allinone.decide.identities import check_name
from allinone.errors import UserError
from allinone.records import REASONS, STATUSES
from allinone.watch.config import CAMERA_NAME

log = logging.getLogger(__name__)

APPLICATION_ID = 0x416C5357  # "AlSW": this file is a sightings database (a gallery file is "AlI1")
SCHEMA_VERSION = 1
UNKNOWN_ID = re.compile(r"U[1-9][0-9]*")
# person filters of ``page`` besides a name or an unknown id; refused as names by ``rename_unknown``
ANY_UNKNOWN, ANY_NAMED = "unknown", "named"
PAGE_MAX = 1000
NAME_MAX_CHARS = 100  # a name shows on a page, a label and a file name
DAY_S = 86400.0
_CHUNK = 1024  # earlier unknown sightings compared per distance call: bounds memory on a long history

_SCHEMA = [
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE sightings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        camera TEXT NOT NULL, track INTEGER NOT NULL,
        first_wall REAL NOT NULL, last_wall REAL NOT NULL,
        first_frame INTEGER NOT NULL, last_frame INTEGER NOT NULL,
        status TEXT NOT NULL, identity TEXT, unknown_id TEXT,
        distance REAL, threshold REAL, lr REAL, verbal TEXT, reason TEXT,
        n_silhouettes INTEGER NOT NULL,
        clip TEXT, crop TEXT, gei TEXT, segment TEXT,
        runners_up TEXT NOT NULL,
        embedding BLOB, embedding_dtype TEXT, embedding_c INTEGER, embedding_p INTEGER)""",
    # files of deleted rows not yet removed from the disk (retain)
    """CREATE TABLE doomed_files (path TEXT PRIMARY KEY)""",
    # the page's filters walk these in id order (newest first) and stop after a page
    "CREATE INDEX sightings_camera ON sightings (camera, id)",
    "CREATE INDEX sightings_identity ON sightings (identity, id)",
    "CREATE INDEX sightings_unknown ON sightings (unknown_id, id)",
    "CREATE INDEX sightings_status ON sightings (status, id)",
    "CREATE INDEX sightings_last_wall ON sightings (last_wall)",  # retention and the time filter
]
_FIELDS = ("camera", "track", "first_wall", "last_wall", "first_frame", "last_frame", "status", "identity",
           "unknown_id", "distance", "threshold", "lr", "verbal", "reason", "n_silhouettes", "clip", "crop", "gei",
           "segment", "runners_up")
_EMBEDDING = ("embedding", "embedding_dtype", "embedding_c", "embedding_p")
_LIST_COLS = ", ".join(("id",) + _FIELDS)  # listings leave the embeddings (16 KB each) out


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _finite(v, low: float = -math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low


def _relative(path: str | None, what: str) -> None:
    """A media path is relative to the output folder and stays inside it (no absolute path, no "..")."""
    if path is None:
        return
    p = PurePosixPath(path) if isinstance(path, str) else None
    _check(p is not None and bool(path) and "\\" not in path and not p.is_absolute() and ".." not in p.parts,
           f"{what} must be a path inside the output folder (relative, no '..'), got {path!r}")


@dataclass(frozen=True, eq=False)
class Sighting:
    """One track that ended on a camera, as stored.

    Walls are unix seconds; frames the track's span in the camera's stream. status, reason and identity follow a
    Decision's rule, with one addition: an unknown sighting given a name later (``rename_unknown``) keeps its
    status and unknown id and carries the name in ``identity``. embedding: float32 [C, P] (None for a track with
    none, and in listings, which leave it out). runners_up: the nearest gallery identities (name, distance),
    nearest first. clip, crop, gei, segment: paths inside the output folder. id: set once stored.
    """

    camera: str
    track: int
    first_wall: float
    last_wall: float
    first_frame: int
    last_frame: int
    status: str
    identity: str | None = None
    unknown_id: str | None = None
    distance: float | None = None
    threshold: float | None = None
    lr: float | None = None
    verbal: str | None = None
    reason: str | None = None
    n_silhouettes: int = 0
    clip: str | None = None
    crop: str | None = None
    gei: str | None = None
    segment: str | None = None
    runners_up: tuple[tuple[str, float], ...] = ()
    embedding: np.ndarray | None = field(default=None, repr=False)  # 16 KB of numbers: not in a log line
    id: int | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.camera, str) and bool(CAMERA_NAME.fullmatch(self.camera)),
               f"bad camera name {self.camera!r}")
        _check(type(self.track) is int and self.track >= 0, f"track must be an int >= 0, got {self.track!r}")
        _check(_finite(self.first_wall) and _finite(self.last_wall) and self.first_wall <= self.last_wall,
               f"bad wall span {self.first_wall!r}..{self.last_wall!r}")
        _check(type(self.first_frame) is int and type(self.last_frame) is int
               and 0 <= self.first_frame <= self.last_frame, f"bad frame span {self.first_frame}..{self.last_frame}")
        self._check_decision()
        _check(type(self.n_silhouettes) is int and self.n_silhouettes >= 0, "n_silhouettes must be an int >= 0")
        for what in ("clip", "crop", "gei", "segment"):
            _relative(getattr(self, what), what)
        _check(isinstance(self.runners_up, tuple) and all(
            isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], str) and _finite(r[1], 0.0)
            for r in self.runners_up), "runners_up must be a tuple of (name, distance >= 0)")
        e = self.embedding
        _check(e is None or (isinstance(e, np.ndarray) and e.dtype == np.float32 and e.ndim == 2 and e.size > 0
                             and bool(np.isfinite(e).all())), "embedding must be a finite float32 [C, P] array")
        _check(self.id is None or (type(self.id) is int and self.id > 0), f"bad id {self.id!r}")

    def _check_decision(self) -> None:
        _check(self.status in STATUSES, f"bad status {self.status!r}")
        _check((self.reason is None) == (self.status == "match"), "a reason is given exactly when not matched")
        _check(self.reason is None or self.reason in REASONS, f"bad reason {self.reason!r}")
        matched = self.status == "match"
        _check(not matched or (self.identity is not None and self.unknown_id is None),
               "a match names its identity and has no unknown id")
        _check(matched or self.identity is None or self.unknown_id is not None,
               "an unmatched sighting carries a name only as a named unknown id")
        _check(self.unknown_id is None or (self.status == "unknown" and isinstance(self.unknown_id, str)
                                           and bool(UNKNOWN_ID.fullmatch(self.unknown_id))),
               f"an unknown id is U<n> on an unknown sighting, got {self.unknown_id!r}")
        _check(self.identity is None or (isinstance(self.identity, str) and bool(self.identity.strip())),
               f"bad identity {self.identity!r}")
        _check(self.distance is None or _finite(self.distance, 0.0), f"bad distance {self.distance!r}")
        _check(self.threshold is None or _finite(self.threshold, 0.0), f"bad threshold {self.threshold!r}")
        _check(self.lr is None or (_finite(self.lr) and self.lr > 0), f"lr must be finite and > 0, got {self.lr!r}")
        _check((self.lr is None) == (self.verbal is None), "an LR comes with its verbal equivalent")


@dataclass(frozen=True)
class CameraSummary:
    """What the database holds of one camera: counts by status, the time covered, its newest sighting."""

    camera: str
    sightings: int
    matched: int
    unknown: int
    too_short: int
    first_wall: float
    last_wall: float
    last_id: int


def _values(s: Sighting) -> tuple:
    """A sighting as the row's values (_FIELDS, then _EMBEDDING)."""
    row = [getattr(s, f) for f in _FIELDS]
    row[_FIELDS.index("runners_up")] = json.dumps([[n, float(d)] for n, d in s.runners_up])
    e = s.embedding
    emb = (None, None, None, None) if e is None else (np.ascontiguousarray(e).tobytes(), str(e.dtype), *e.shape)
    return (*row, *emb)


def _sighting(row: sqlite3.Row) -> Sighting:
    """A row (_LIST_COLS, with or without _EMBEDDING) as a Sighting."""
    kw = {f: row[f] for f in _FIELDS}
    kw["runners_up"] = tuple((n, float(d)) for n, d in json.loads(row["runners_up"]))
    if "embedding" in row.keys() and row["embedding"] is not None:
        shape = (row["embedding_c"], row["embedding_p"])
        kw["embedding"] = np.frombuffer(row["embedding"], np.dtype(row["embedding_dtype"])).reshape(shape).copy()
    return Sighting(id=row["id"], **kw)


def _apart(a: str, b: str) -> bool:
    """No two cameras see one person at the same moment (the default: cameras that do not overlap)."""
    return False


def _overlap(a0: float, a1: float, b0: float, b1: float) -> bool:
    """Two wall spans share a moment (touching ends do not: one person can leave one camera as they reach the
    next)."""
    return a0 < b1 and b0 < a1


class Sightings:
    """The sightings database at ``path``, created if missing; media paths are inside ``root`` (default: the
    database's folder, the service's output folder). One connection, shared by the service's threads under a lock
    (the unknown-id scan reads through one of its own); other processes may read the file at the same time (WAL)."""

    def __init__(self, path: str | Path, root: str | Path | None = None) -> None:
        self.path = Path(path)
        self.root = Path(root) if root is not None else self.path.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise
        self._remove_doomed()  # a retain that crashed between its commit and its files

    def _open(self) -> None:
        """Refuse another program's database (read only, before anything is written), then WAL and the schema."""
        try:
            app, version = (self._db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version"))
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc).lower():
                raise  # damaged, or the disk: errors.fault_line tells the user which
            raise UserError(f"not a sightings database ({exc}); it is left unchanged", self.path) from None
        if app != APPLICATION_ID and (app != 0 or tables):
            raise UserError("not a sightings database (another program's SQLite file); it is left unchanged",
                            self.path)
        if version > SCHEMA_VERSION:
            raise UserError(f"a sightings database of a newer allinone (schema {version}); update allinone",
                            self.path)
        if self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise UserError("cannot use a WAL journal here (a network file system?): put the output folder on a "
                            "local disk", self.path)
        self._db.execute("PRAGMA synchronous=FULL")  # module doc: a sighting told to anyone is on disk
        with self._tx() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # again, inside the lock: another opener
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('unknown_seq', '0')")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock up front, so it never fails half way for a
        reader turned writer); rolled back on any error, a failed COMMIT (full disk) included."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Sightings":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, s: Sighting) -> int:
        _check(s.id is None, f"sighting {s.id} is stored already")
        cols = _FIELDS + _EMBEDDING
        cur = db.execute(f"INSERT INTO sightings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         _values(s))
        if s.unknown_id is not None:  # an id given by hand counts too: numbering never hands it out again
            db.execute("UPDATE meta SET value = max(CAST(value AS INTEGER), ?) WHERE key = 'unknown_seq'",
                       (int(s.unknown_id[1:]),))
        return int(cur.lastrowid)

    def add(self, sighting: Sighting) -> int:
        """Store one sighting in its own transaction; its id."""
        with self._tx() as db:
            return self._insert(db, sighting)

    def add_many(self, sightings: list[Sighting]) -> list[int]:
        """Store many in one transaction (imports, tests): the service adds one by one, each durable at once."""
        with self._tx() as db:
            return [self._insert(db, s) for s in sightings]

    # --- reading ---------------------------------------------------------------------------------------------

    def _select(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get(self, sighting_id: int) -> Sighting | None:
        """One sighting with its embedding, or None."""
        rows = self._select(f"SELECT {_LIST_COLS}, {', '.join(_EMBEDDING)} FROM sightings WHERE id = ?",
                            (int(sighting_id),))
        return _sighting(rows[0]) if rows else None

    def page(self, camera: str | None = None, person: str | None = None, since: float | None = None,
             until: float | None = None, status: str | None = None, limit: int = 50,
             before_id: int | None = None) -> list[Sighting]:
        """Newest first (by id: the order they were stored in), without embeddings, at most ``limit``.

        person: a name, an unknown id (U17), "unknown" (no name) or "named". since / until: unix seconds; a
        sighting is in the range when its span meets it. before_id: the next page starts after the last id of
        this one (keyset paging: a page costs the same however deep, and sightings added meanwhile do not shift
        it). Bad arguments are UserErrors (the API answers them 400)."""
        if type(limit) is not int or not 1 <= limit <= PAGE_MAX:
            raise UserError(f"limit must be 1 to {PAGE_MAX}, got {limit!r}")
        where, args = _filters(camera, person, since, until, status)
        if before_id is not None:
            where.append("id < ?")
            args.append(_positive_id(before_id))
        sql = f"SELECT {_LIST_COLS} FROM sightings" + (" WHERE " + " AND ".join(where) if where else "")
        return [_sighting(r) for r in self._select(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])]

    def person(self, name_or_uid: str) -> list[Sighting]:
        """Every sighting of a named person or of an unknown id (U17), in time order, without embeddings."""
        if not isinstance(name_or_uid, str) or not name_or_uid.strip():
            raise UserError(f"a person is a name or an unknown id (U17), got {name_or_uid!r}")
        col = "unknown_id" if UNKNOWN_ID.fullmatch(name_or_uid) else "identity"
        rows = self._select(f"SELECT {_LIST_COLS} FROM sightings WHERE {col} = ? ORDER BY first_wall, id",
                            (name_or_uid,))
        return [_sighting(r) for r in rows]

    def cameras(self) -> list[CameraSummary]:
        """Each camera that has sightings, by name."""
        rows = self._select(
            "SELECT camera, count(*), total(status = 'match'), total(status = 'unknown'), "
            "total(status = 'too_short'), min(first_wall), max(last_wall), max(id) FROM sightings "
            "GROUP BY camera ORDER BY camera")
        return [CameraSummary(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), r[5], r[6], r[7]) for r in rows]

    def people(self) -> list[tuple[str, str, int, float]]:
        """(kind, key, sightings, newest last_wall) of each person the sightings know: "named" by name (matched or
        named later), then "unknown" by unknown id (not named yet), each newest first (the review page's list)."""
        rows = self._select(
            "SELECT 'named', identity, count(*), max(last_wall) FROM sightings WHERE identity IS NOT NULL "
            "GROUP BY identity UNION ALL SELECT 'unknown', unknown_id, count(*), max(last_wall) FROM sightings "
            "WHERE unknown_id IS NOT NULL AND identity IS NULL GROUP BY unknown_id ORDER BY 1, 4 DESC")
        return [(r[0], r[1], int(r[2]), float(r[3])) for r in rows]

    def media(self, relative: str) -> Path:
        """The file a sighting's media path names, resolved inside ``root`` (links included); ValueError for a
        path that leads out of it."""
        _relative(relative, "a media path")
        root = self.root.resolve()
        path = (root / relative).resolve()
        _check(path.is_relative_to(root), f"media path {relative!r} leads out of the output folder")
        return path

    # --- retention -------------------------------------------------------------------------------------------

    def retain(self, days: float, now: float | None = None) -> int:
        """Delete the sightings that ended more than ``days`` days before ``now`` (unix seconds, default: the
        clock) and their clip, crop and GEI files (rows first: module doc); the count deleted. 0 days keeps all.
        Segment videos are shared by many sightings and are not theirs to delete."""
        _check(_finite(days, 0.0), f"days must be a number >= 0, got {days!r}")
        if days == 0:
            return 0
        cutoff = (time.time() if now is None else float(now)) - days * DAY_S
        with self._tx() as db:
            rows = db.execute("SELECT clip, crop, gei FROM sightings WHERE last_wall < ?", (cutoff,)).fetchall()
            db.executemany("INSERT OR IGNORE INTO doomed_files VALUES (?)",
                           [(p,) for row in rows for p in row if p is not None])
            db.execute("DELETE FROM sightings WHERE last_wall < ?", (cutoff,))
        self._remove_doomed()
        if rows:
            log.info("retention: %d sightings older than %g days deleted", len(rows), days)
        return len(rows)

    def _remove_doomed(self) -> None:
        """Remove the files of deleted rows, then forget them; a file that cannot be removed now stays listed."""
        paths = [r[0] for r in self._select("SELECT path FROM doomed_files")]
        done = []
        for rel in paths:
            try:
                self.media(rel).unlink(missing_ok=True)
            except ValueError:  # leads out of the output folder (a link): never deleted, only forgotten
                log.warning("%s: not removed (outside the output folder)", rel)
            except OSError as exc:
                log.warning("%s: cannot be removed now (%s); tried again at the next retention", rel,
                            exc.strerror or exc)
                continue
            done.append((rel,))
        if done:
            with self._tx() as db:
                db.executemany("DELETE FROM doomed_files WHERE path = ?", done)

    # --- unknown ids -----------------------------------------------------------------------------------------

    def unknown_id_for(self, embedding: np.ndarray, first_wall: float, last_wall: float, camera: str,
                       threshold: float, metric: str = "euc",
                       together_ok: Callable[[str, str], bool] | None = None) -> str:
        """The unknown id of an unknown sighting about to be added: that of the nearest earlier unknown sighting
        (any camera, not yet named) within ``threshold`` under ``metric`` (decide/distance.py: the gallery's
        distance), unless that id was seen together with this one; else a new U<n>.

        Seen together: an earlier sighting of the id overlaps [first_wall, last_wall] on the same camera, or on a
        camera that cannot see one person at the same moment as ``camera`` (``together_ok(a, b)`` False; default:
        no two cameras can, WatchConfig.may_see_together says which do). One person is not in two places at once,
        so every sighting of that id rules it out. Add the sighting before asking for the next one's id: only
        stored sightings are compared."""
        feature = embedding
        _check(isinstance(feature, np.ndarray) and feature.dtype == np.float32 and feature.ndim == 2,
               "embedding must be a float32 [C, P] array")
        _check(_finite(first_wall) and _finite(last_wall) and first_wall <= last_wall,
               f"bad wall span {first_wall!r}..{last_wall!r}")
        _check(_finite(threshold, 0.0), f"threshold must be a distance >= 0, got {threshold!r}")
        best = self._nearest_unknown(feature, (first_wall, last_wall), camera, metric, together_ok or _apart)
        if best is not None and best[0] <= threshold:  # within, as a match is (decide/match.py)
            log.debug("%s: %s again (distance %.4f)", camera, best[1], best[0])
            return best[1]
        return self._new_unknown_id()

    def _nearest_unknown(self, feature: np.ndarray, span: tuple[float, float], camera: str, metric: str,
                         together_ok: Callable[[str, str], bool]) -> tuple[float, str] | None:
        """(distance, unknown id) of the nearest earlier unnamed unknown sighting whose id was never seen
        together with ``span`` on ``camera``; None when there is none. Read in chunks: memory stays bounded."""
        from allinone.decide.distance import distance_matrix
        nearest: dict[str, float] = {}
        ruled_out: set[str] = set()
        # a connection of its own, read only: the scan takes a while on a long history (about 0.2 ms per stored
        # GaitBase sighting on a 2-core CPU), and WAL lets it read one snapshot while pages and adds go on
        with closing(sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True,
                                     timeout=30)) as con:
            cur = con.execute(
                "SELECT unknown_id, camera, first_wall, last_wall, embedding FROM sightings WHERE unknown_id IS "
                "NOT NULL AND identity IS NULL AND embedding_dtype = 'float32' AND embedding_c = ? AND "
                "embedding_p = ?", feature.shape)
            while rows := cur.fetchmany(_CHUNK):
                kept = []
                for uid, cam, first, last, blob in rows:
                    if _overlap(*span, first, last) and (cam == camera or not together_ok(camera, cam)):
                        ruled_out.add(uid)
                    else:
                        kept.append((uid, np.frombuffer(blob, np.float32).reshape(feature.shape)))
                if kept:
                    dist = distance_matrix(feature[None], np.stack([f for _, f in kept]), metric)[0]
                    for (uid, _), d in zip(kept, dist.tolist()):
                        nearest[uid] = min(d, nearest.get(uid, math.inf))
        found = [(d, int(uid[1:])) for uid, d in nearest.items() if uid not in ruled_out]
        return (min(found)[0], f"U{min(found)[1]}") if found else None

    def _new_unknown_id(self) -> str:
        with self._tx() as db:
            n = int(db.execute("SELECT value FROM meta WHERE key = 'unknown_seq'").fetchone()[0]) + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'unknown_seq'", (n,))
        return f"U{n}"

    def rename_unknown(self, uid: str, name: str) -> int:
        """Give every sighting of unknown id ``uid`` the name ``name`` (enrolling from a sighting, issue 29), in
        one transaction; how many sightings it named (0: no sighting has that id). Their status and unknown id
        stay: what was decided then. Named sightings no longer take part in ``unknown_id_for``: the person is in
        the gallery now, decided there."""
        if not isinstance(uid, str) or not UNKNOWN_ID.fullmatch(uid):
            raise UserError(f"not an unknown id (U17): {uid!r}")
        name = check_name(name if isinstance(name, str) else "", "a person's name")
        if len(name) > NAME_MAX_CHARS:
            raise UserError(f"a person's name has at most {NAME_MAX_CHARS} characters, got {len(name)}")
        if name in (ANY_UNKNOWN, ANY_NAMED) or UNKNOWN_ID.fullmatch(name):
            raise UserError(f"{name!r} cannot name a person: it is a filter word (unknown, named, U<n>)")
        with self._tx() as db:
            n = db.execute("UPDATE sightings SET identity = ? WHERE unknown_id = ?", (name, uid)).rowcount
        log.info("%s named %r on %d sightings", uid, name, n)
        return n


def _positive_id(value) -> int:
    if type(value) is not int or value < 1:
        raise UserError(f"a sighting id is a whole number ≥ 1, got {value!r}")
    return value


def _filters(camera, person, since, until, status) -> tuple[list[str], list]:
    """SQL conditions and their arguments for ``Sightings.page``."""
    where, args = [], []
    if camera is not None:
        where.append("camera = ?")
        args.append(str(camera))
    if person == ANY_UNKNOWN:
        where.append("identity IS NULL")
    elif person == ANY_NAMED:
        where.append("identity IS NOT NULL")
    elif person is not None:
        if not isinstance(person, str) or not person.strip():
            raise UserError(f"person must be a name, an unknown id (U17), unknown or named, got {person!r}")
        where.append("unknown_id = ?" if UNKNOWN_ID.fullmatch(person) else "identity = ?")
        args.append(person)
    for value, what in ((since, "since"), (until, "until")):
        if value is not None and not _finite(value):
            raise UserError(f"{what} must be a time in unix seconds, got {value!r}")
    if since is not None and until is not None and since > until:
        raise UserError(f"the time range ends before it starts ({since} > {until})")
    if since is not None:
        where.append("last_wall >= ?")
        args.append(float(since))
    if until is not None:
        where.append("first_wall <= ?")
        args.append(float(until))
    if status is not None:
        if status not in STATUSES:
            raise UserError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        where.append("status = ?")
        args.append(status)
    return where, args


__all__ = ["ANY_NAMED", "ANY_UNKNOWN", "APPLICATION_ID", "CameraSummary", "Sighting", "Sightings", "UNKNOWN_ID"]
