"""The enrolled gallery: one SQLite file of known people, their gait features and pictures, kept between runs.

    python main.py enroll VIDEO [--name NAME] [--gallery-db PATH]
    python main.py gallery list|rename OLD NEW|remove NAME|export DIR|backup FILE|check [--gallery-db PATH]
    python main.py --gallery-db PATH --probe VIDEO ...

Every feature in a store comes from one checkpoint, compared by one metric and taken from one embedding output (the
checkpoint's sha256, architecture, metric and embedding are the store's own, and the segmenter and pose model its
silhouettes and keypoints came from: io/input_models.py); a model that differs in any of them is refused by name
(ModelInfo.mismatch, the one place that compares them). A file enrolled before the input models were recorded is
accepted with a warning (its segmenter is unknown). Changes are single transactions (BEGIN IMMEDIATE: an enrol
that fails or is interrupted leaves the store exactly as it was, and the name checks run inside it), and the file is
in WAL mode: readers see the state before or after an enrol, never a half of one.
A file that is not an allinone gallery is refused before anything is written to it (gallery/sqlite_file.py).
Features are float32 blobs; pictures are PNG blobs.

Large galleries (more than SearchConfig.exact_limit tracks) are searched through a bound index kept beside the file
(gallery/search.py): every identity within the threshold is found; the ranking beyond it is approximate.

Over 400 lines: the store is one class whose reads, writes and checks (quick check before writes, every feature's
size and finiteness where it is read) share its connection and transactions; split, each part would reach into it.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from allinone.decide.identities import check_name
from allinone.errors import UserError
from allinone.gallery import sqlite_file
from allinone.io.run_folder import temp_beside, writable_folder
from allinone.records import Embedding, Identity
from allinone.io.input_models import InputModels

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY, identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    source TEXT NOT NULL, track INTEGER NOT NULL, first_frame INTEGER NOT NULL, last_frame INTEGER NOT NULL,
    n_silhouettes INTEGER NOT NULL, c INTEGER NOT NULL, p INTEGER NOT NULL, feature BLOB NOT NULL,
    crop_png BLOB, gei_png BLOB, checkpoint_sha256 TEXT NOT NULL, enrolled TEXT NOT NULL);
"""
GALLERY_VIDEO = "gallery"  # the video name gallery-store embeddings carry (never a probe's: those are file stems)


@dataclass(frozen=True)
class ModelInfo:
    """Where features come from and how they are compared: the checkpoint (sha256, path, architecture), the metric
    and the embedding output. An empty arch, metric or embedding means "not known yet" and is not compared."""

    sha256: str
    path: str
    arch: str
    metric: str
    embedding: str = "embed_1"
    source_sha256: str = ""  # an ONNX export's: the checkpoint it was exported from (the same weights)
    inputs: InputModels = InputModels()  # the segmenter (and pose model) the features were made from; unknown: any

    def mismatch(self, other: "ModelInfo") -> str | None:
        """Why features of ``other`` cannot go with (or be compared with) this store's, or None when they can."""
        same = self.sha256 in (other.sha256, other.source_sha256 or other.sha256)  # the file, or its source
        if not same or (other.arch and self.arch and self.arch != other.arch):
            return (f"its features come from another gait checkpoint ({self.arch}, {Path(self.path).name}, "
                    f"sha256 {self.sha256[:12]}…) than {other.path} (sha256 {other.sha256[:12]}…): use that "
                    "checkpoint or another gallery file")
        if other.metric and self.metric and self.metric != other.metric:
            return (f"its features are compared by the {self.metric} metric, this run uses {other.metric}: give "
                    f"--metric {self.metric} or use another gallery file")
        if other.embedding and self.embedding and self.embedding != other.embedding:
            return (f"its features are the checkpoint's {self.embedding} output, this run uses {other.embedding}: "
                    f"give --embedding {self.embedding} or use another gallery file")
        return self.inputs.mismatch(other.inputs, "enrolled")


def _mapped(method):
    """sqlite3 errors of a store method become the user's one-line account (gallery/sqlite_file.py)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise sqlite_file.sqlite_error(exc, self.path) from None
    return call


@dataclass(frozen=True)
class Enrolled:
    """What an enrol did to one identity: ``added`` tracks, ``tracks`` it has now, ``new`` when it did not exist."""

    name: str
    added: int
    tracks: int
    new: bool


@dataclass
class Enrolment:
    """One person to add: a name and their tracks (TrackResult records with embeddings) from one source video."""

    name: str
    source: str
    tracks: list  # TrackResult

    def __post_init__(self) -> None:
        self.name = check_name(self.name)


def _png(img: np.ndarray | None) -> bytes | None:
    if img is None:
        return None
    ok, buf = cv2.imencode(".png", img)
    return buf.tobytes() if ok else None


def _feature_problem(blob, c: int, p: int) -> str | None:
    """What is wrong with a stored feature (its size for [c, p] float32, its values finite), or None."""
    if not isinstance(blob, bytes) or len(blob) != 4 * c * p:
        size = len(blob) if isinstance(blob, bytes) else 0
        return f"has a feature of {size} bytes, not the {4 * c * p} of [{c}, {p}] float32"
    if not np.isfinite(np.frombuffer(blob, np.float32)).all():
        return "has a feature with NaN or infinite values"
    return None


class GalleryStore:
    """A gallery file. ``create`` makes a new one where none exists; otherwise a missing file is a UserError.
    ``readonly`` opens it with SQLite's ``mode=ro`` (list, check, backup, export, runs): nothing can be written."""

    def __init__(self, path: str | Path, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.held_indexes: dict = {}  # metric → ((generation, settings), index): gallery/file_search.py
        self._count: tuple | None = None  # (generation, tracks): count_tracks
        if self.path.is_dir():
            raise UserError("is a directory, not a gallery file", self.path)
        if not self.path.exists():
            if not create:
                raise UserError("gallery file not found (enrol people first: python main.py enroll VIDEO "
                                "--gallery-db FILE)", self.path)
            sqlite_file.create_atomically(self.path, SCHEMA, {"uuid": uuid.uuid4().hex, "schema": "1"})
        kind = sqlite_file.inspect(self.path)  # read-only: a foreign file is refused before any write
        if kind == "empty":
            if not create or readonly:
                raise UserError("an empty file, not a gallery file", self.path)
            self.path.unlink()
            sqlite_file.create_atomically(self.path, SCHEMA, {"uuid": uuid.uuid4().hex, "schema": "1"})
        self.legacy = kind == "legacy"
        try:
            if readonly:
                self.db = sqlite3.connect(sqlite_file.ro_uri(self.path), uri=True, timeout=30,
                                          isolation_level=None)
            else:
                self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
                self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("SELECT COUNT(*) FROM tracks").fetchone()
        except sqlite3.Error as exc:
            raise sqlite_file.sqlite_error(exc, self.path) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """One write transaction: all of it or nothing (BEGIN IMMEDIATE: one writer at a time)."""
        if self.readonly:
            raise RuntimeError("a read-only GalleryStore cannot write")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise sqlite_file.sqlite_error(exc, self.path) from None
        try:
            self.verify()  # a write into damaged pages would spread the damage
            yield self.db
        except BaseException as exc:
            self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise sqlite_file.sqlite_error(exc, self.path) from None
            raise
        self.db.execute("COMMIT")
        self.legacy = False

    def verify(self) -> None:
        """SQLite's quick check of the whole file (its pages and their links, not the index order: it reads the file
        once), a UserError saying "damaged" when it finds anything: every write and ``gallery list`` run it first."""
        try:
            found = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.Error as exc:
            raise sqlite_file.sqlite_error(exc, self.path) from None
        if found != "ok":  # SQLite's account spans lines ("*** in database main ***" first)
            found = " ".join(str(found).replace("*** in database main ***", "").split())
            raise sqlite_file.sqlite_error(sqlite3.DatabaseError(f"database disk image is malformed: {found}"),
                                           self.path)

    def _feature(self, blob: bytes, c: int, p: int, track: int) -> np.ndarray:
        """A stored feature [c, p] float32, checked as it is read (a NaN would become every distance's and end a
        run at its JSON): a UserError saying "damaged" otherwise."""
        why = _feature_problem(blob, c, p)
        if why:
            raise UserError(f"the gallery file is damaged: track {track} {why} (python main.py gallery check lists "
                            "every such track; remove its identity and enrol it again, or restore a backup)",
                            self.path)
        return np.frombuffer(blob, np.float32).reshape(c, p)

    @_mapped
    def bad_features(self, limit: int = 20) -> list[str]:
        """Up to ``limit`` accounts of tracks whose stored feature is of the wrong size or not finite."""
        out = []
        for tid, name, c, p, blob in self.db.execute(
                "SELECT t.id, i.name, t.c, t.p, t.feature FROM tracks t JOIN identities i ON i.id = t.identity_id "
                "ORDER BY t.id"):
            why = _feature_problem(blob, c, p)
            if why:
                out.append(f"track {tid} of {name!r}: {why}")
                if len(out) >= limit:
                    break
        return out

    @contextmanager
    def snapshot(self):
        """A read transaction: everything read inside sees one state of the file (WAL snapshot)."""
        self.db.execute("BEGIN")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    # -- the model ---------------------------------------------------------------------------------------------
    @_mapped
    def model(self) -> ModelInfo | None:
        meta = self.meta()
        if "checkpoint_sha256" not in meta:
            return None
        try:
            inputs = InputModels.from_json(json.loads(meta["inputs"])) if "inputs" in meta else InputModels()
        except ValueError:
            raise UserError("the gallery's record of its input models is damaged", self.path) from None
        return ModelInfo(meta["checkpoint_sha256"], meta.get("checkpoint", ""), meta.get("arch", ""),
                         meta.get("metric", ""), meta.get("embedding", "embed_1"), inputs=inputs)

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def check_model(self, model: ModelInfo) -> None:
        """UserError (naming both) unless the store is empty or holds features of this very model."""
        mine = self.model()
        why = None if mine is None else mine.mismatch(model)
        if why:
            raise UserError(why, self.path)
        if mine is not None and not mine.inputs.known and model.inputs.known:
            # a file enrolled before its segmenter was recorded: accepted, as before, but nothing can refuse
            # features from other silhouettes
            log.warning("%s: enrolled before the segmenter was recorded: its silhouettes' segmenter is unknown, so "
                        "features made by another one (this run: %s) cannot be told apart", self.path,
                        model.inputs.segmenter.label)

    # -- reading -----------------------------------------------------------------------------------------------
    @_mapped
    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM identities ORDER BY id")]

    def _identities(self, where: str = "", args: list | tuple = ()) -> list[Identity]:
        rows = self.db.execute(
            "SELECT i.id, i.name, t.id, t.first_frame, t.last_frame, t.n_silhouettes, t.c, t.p, t.feature "
            f"FROM identities i JOIN tracks t ON t.identity_id = i.id {where} ORDER BY i.id, t.id", args).fetchall()
        by: dict[int, tuple[str, list[Embedding]]] = {}
        for iid, name, tid, first, last, n, c, p, blob in rows:
            feat = self._feature(blob, c, p, tid).copy()
            by.setdefault(iid, (name, []))[1].append(Embedding(GALLERY_VIDEO, tid, feat, n, first, last))
        return [Identity(name, tuple(members), key=iid) for iid, (name, members) in by.items()]

    @_mapped
    def identities(self) -> list[Identity]:
        """Every identity with its tracks' embeddings (video GALLERY_VIDEO, track id = the stored track's id)."""
        return self._identities()

    @_mapped
    def count_tracks(self) -> int:
        """Remembered per generation outside transactions (COUNT(*) reads the whole table; a stream asks at every
        decision). Generation first: a change between the reads leaves a newer count, replaced at the next call."""
        gen = None if self.db.in_transaction else self.generation()
        if gen is None or self._count is None or self._count[0] != gen:
            self._count = (gen, int(self.db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]))
        return self._count[1]

    @_mapped
    def generation(self) -> int:
        """Bumped by every change of the stored features (an index built for another generation is stale)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _bump(self, db) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self.generation() + 1),))

    @_mapped
    def identities_by_id(self, ids: list[int]) -> list[Identity]:
        """The identities with these ids, each with all its tracks (in id order)."""
        out: list[Identity] = []
        ids = sorted(set(int(i) for i in ids))
        for s in range(0, len(ids), 500):
            part = ids[s:s + 500]
            out += self._identities(f"WHERE i.id IN ({','.join('?' * len(part))})", part)
        return out

    def rows(self, chunk: int = 20_000):
        """(track ids, identity ids, n_silhouettes, features [k, c, p]) in chunks, in track id order."""
        last = -1
        while True:
            rows = self.db.execute("SELECT id, identity_id, n_silhouettes, c, p, feature FROM tracks WHERE id > ? "
                                   "ORDER BY id LIMIT ?", (last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                   np.array([r[2] for r in rows], np.int64),
                   np.stack([self._feature(r[5], r[3], r[4], r[0]) for r in rows]))

    def tracks_of(self, track_ids: list[int]) -> dict[int, tuple]:
        """Track id → (n_silhouettes, first_frame, last_frame, feature [c, p]) for these tracks."""
        out = {}
        for s in range(0, len(track_ids), 500):
            part = [int(t) for t in track_ids[s:s + 500]]
            for tid, n, first, last, c, p, blob in self.db.execute(
                    "SELECT id, n_silhouettes, first_frame, last_frame, c, p, feature FROM tracks WHERE id IN "
                    f"({','.join('?' * len(part))})", part):
                out[tid] = (n, first, last, self._feature(blob, c, p, tid))
        return out

    def sample_ids(self, k: int, seed: int, min_frames: int = 0) -> list[int]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM tracks WHERE n_silhouettes >= ? ORDER BY id",
                                             (min_frames,))]
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(ids, min(k, len(ids)), replace=False).tolist()) if ids else []

    def owners(self, track_ids: list[int]) -> dict[int, int]:
        """Track id → its identity's id."""
        out = {}
        for s in range(0, len(track_ids), 500):
            part = [int(t) for t in track_ids[s:s + 500]]
            out.update(self.db.execute(f"SELECT id, identity_id FROM tracks WHERE id IN ({','.join('?' * len(part))})",
                                       part).fetchall())
        return out

    @_mapped
    def search_index(self, config, metric: str):
        """The bound index of this file for ``metric``, kept beside it (gallery/file_search.py)."""
        from allinone.gallery.file_search import search_index
        return search_index(self, config, metric)

    @_mapped
    def candidates(self, probes: list[Embedding], config, metric: str, threshold: float,
                   min_frames: int = 0) -> tuple[list[Identity], dict]:
        """The identities to compare the probes with, and how they were found (run.json ``search``): all of them
        up to config.exact_limit tracks, else every identity within ``threshold`` and the nearest others
        (gallery/file_search.py)."""
        if self.count_tracks() <= config.exact_limit:
            return self.identities(), {"mode": "exact", "tracks": self.count_tracks()}
        from allinone.gallery.file_search import candidates
        return candidates(self, probes, config, metric, threshold, min_frames)

    def lookup(self, config, metric: str, threshold: float, min_frames: int = 0):
        """A callable for probes that come one batch at a time (a live stream): embeddings → the identities to
        compare them with (candidates' rule); the index is built or loaded once."""
        if self.count_tracks() > config.exact_limit:
            self.search_index(config, metric)

        def find(probes: list[Embedding]) -> list[Identity]:
            return self.candidates(probes, config, metric, threshold, min_frames)[0]
        return find

    @_mapped
    def pictures(self, track_ids: list[int]) -> dict[int, tuple[bytes | None, bytes | None]]:
        """Stored track id → (crop PNG, GEI PNG), for these tracks."""
        if not track_ids:
            return {}
        marks = ",".join("?" * len(track_ids))
        return {tid: (crop, gei) for tid, crop, gei in self.db.execute(
            f"SELECT id, crop_png, gei_png FROM tracks WHERE id IN ({marks})", list(track_ids))}

    @_mapped
    def listing(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT i.name, i.created, COUNT(t.id), GROUP_CONCAT(DISTINCT t.source), SUM(t.n_silhouettes) "
            "FROM identities i LEFT JOIN tracks t ON t.identity_id = i.id GROUP BY i.id ORDER BY i.id").fetchall()
        return [{"name": n, "enrolled": c, "tracks": k, "sources": s or "", "silhouettes": int(sil or 0)}
                for n, c, k, s, sil in rows]

    # -- writing -----------------------------------------------------------------------------------------------
    @_mapped
    def add(self, enrolments: list[Enrolment], model: ModelInfo, new_names: bool = False) -> list[Enrolled]:
        """Add identities in one transaction; returns what it did to each. A name that exists gains the new tracks,
        unless ``new_names``: then an existing name refuses the whole enrol. The check runs inside the transaction,
        so two enrols of one name at once cannot both pass it."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.transaction() as db:
            self.check_model(model)  # inside the transaction: no other writer can change the store meanwhile
            if new_names:
                clash = [e.name for e in enrolments
                         if db.execute("SELECT 1 FROM identities WHERE name = ?", (e.name,)).fetchone()]
                if clash:
                    raise UserError(f"identities named {', '.join(clash)} exist already in the gallery file (enrol "
                                    "the video under --name, or rename or remove them first)", self.path)
            self._bump(db)
            if self.legacy:
                db.execute(f"PRAGMA application_id = {sqlite_file.APPLICATION_ID}")
                db.execute("INSERT OR IGNORE INTO meta VALUES ('uuid', ?)", (uuid.uuid4().hex,))
            if self.model() is None:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("checkpoint_sha256", model.sha256), ("checkpoint", model.path),
                                ("arch", model.arch), ("metric", model.metric), ("embedding", model.embedding or "embed_1"),
                                ("inputs", json.dumps(model.inputs.to_json())), ("schema", "1")])
            done = []
            for e in enrolments:
                row = db.execute("SELECT id FROM identities WHERE name = ?", (e.name,)).fetchone()
                iid = row[0] if row else db.execute("INSERT INTO identities (name, created) VALUES (?, ?)",
                                                    (e.name, now)).lastrowid
                for t in e.tracks:
                    f = t.embedding.feature
                    db.execute("INSERT INTO tracks (identity_id, source, track, first_frame, last_frame, "
                               "n_silhouettes, c, p, feature, crop_png, gei_png, checkpoint_sha256, enrolled) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (iid, e.source, t.track_id, t.first_frame, t.last_frame, t.n_silhouettes,
                                f.shape[0], f.shape[1], np.ascontiguousarray(f, np.float32).tobytes(),
                                _png(t.crop), _png(t.gei), model.sha256, now))
                total = db.execute("SELECT COUNT(*) FROM tracks WHERE identity_id = ?", (iid,)).fetchone()[0]
                done.append(Enrolled(e.name, len(e.tracks), int(total), row is None))
        return done

    @_mapped
    def rename(self, old: str, new: str) -> None:
        new = check_name(new, "the new name")
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM identities WHERE name = ?", (new,)).fetchone():
                raise UserError(f"an identity named {new!r} exists already", self.path)
            if db.execute("UPDATE identities SET name = ? WHERE name = ?", (new, old)).rowcount == 0:
                raise UserError(f"no identity named {old!r}", self.path)

    @_mapped
    def remove(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM identities WHERE name = ?", (name,)).rowcount == 0:
                raise UserError(f"no identity named {name!r}", self.path)
            self._bump(db)

    @_mapped
    def backup(self, target: Path) -> Path:
        """A copy of the file at ``target`` by SQLite's online backup (runs and enrols may go on meanwhile)."""
        sqlite_file.backup(self.db, Path(target), self.path)
        return Path(target)

    @_mapped
    def export(self, out: Path) -> Path:
        """A folder anyone can read: gallery.json, and per identity its features (.npy), crops and GEIs (.png).
        Written under a temporary name beside ``out`` and moved into place whole: a failed export leaves nothing."""
        if out.exists() and not out.is_dir():
            raise UserError("exists and is not a folder: give a new folder for the export", out)
        if out.is_dir() and any(out.iterdir()):
            raise UserError("export folder exists and is not empty", out)
        writable_folder(out.parent, "export folder's parent")
        tmp = temp_beside(out)
        try:
            tmp.mkdir()
            self._export_into(tmp)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out

    def _export_into(self, out: Path) -> None:
        rows = self.db.execute(
            "SELECT i.name, t.id, t.source, t.track, t.first_frame, t.last_frame, t.n_silhouettes, t.c, t.p, "
            "t.feature, t.crop_png, t.gei_png, t.enrolled FROM identities i JOIN tracks t ON t.identity_id = i.id "
            "ORDER BY i.id, t.id").fetchall()
        people: dict[str, list] = {}
        for name, tid, src, track, first, last, n, c, p, blob, crop, gei, when in rows:
            entries = people.setdefault(name, [])
            folder = out / f"{list(people).index(name):03d}"
            folder.mkdir(exist_ok=True)
            base = str(len(entries))
            entry = {"track": tid, "source": src, "source_track": track, "first_frame": first + 1,
                     "last_frame": last + 1, "n_silhouettes": n, "enrolled": when,
                     "feature": f"{folder.name}/{base}.npy"}
            np.save(folder / f"{base}.npy", np.frombuffer(blob, np.float32).reshape(c, p))
            for key, data in (("crop", crop), ("gei", gei)):
                if data:
                    (folder / f"{base}_{key}.png").write_bytes(data)
                    entry[key] = f"{folder.name}/{base}_{key}.png"
            entries.append(entry)
        m = self.model()
        model = None if m is None else {**m.__dict__, "inputs": m.inputs.to_json()}
        manifest = {"gallery": str(self.path), "model": model,
                    "identities": [{"name": n, "folder": f"{i:03d}", "tracks": t}
                                   for i, (n, t) in enumerate(people.items())]}
        (out / "gallery.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
