"""The enrolled gallery: one SQLite file of known people, their gait features and pictures, kept between runs.

    python main.py enroll VIDEO [--name NAME] [--gallery-db PATH]
    python main.py gallery list|rename OLD NEW|remove NAME|export DIR [--gallery-db PATH]
    python main.py --gallery-db PATH --probe VIDEO ...

Every feature in a store comes from one checkpoint (its sha256, architecture and metric are the store's own); a
model that differs is refused by name. Changes are single transactions (an enrol that fails or is interrupted leaves
the store exactly as it was), and the file is in WAL mode: readers see the state before or after an enrol, never a
half of one. Features are float32 blobs; pictures are PNG blobs.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from allinone.errors import UserError
from allinone.records import Embedding, Identity

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
    """The checkpoint features come from."""

    sha256: str
    path: str
    arch: str
    metric: str
    source_sha256: str = ""  # an ONNX export's: the checkpoint it was exported from (the same weights)


@dataclass
class Enrolment:
    """One person to add: a name and their tracks (TrackResult records with embeddings) from one source video."""

    name: str
    source: str
    tracks: list  # TrackResult


def _png(img: np.ndarray | None) -> bytes | None:
    if img is None:
        return None
    ok, buf = cv2.imencode(".png", img)
    return buf.tobytes() if ok else None


class GalleryStore:
    """A gallery file. ``create`` makes a new one where none exists; otherwise a missing file is a UserError."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError("is a directory, not a gallery file", self.path)
        if not self.path.exists() and not create:
            raise UserError("gallery file not found (enrol people first: python main.py enroll VIDEO "
                            "--gallery-db FILE)", self.path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys=ON")
            if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"not a gallery file ({exc})", self.path) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """One write transaction: all of it or nothing (BEGIN IMMEDIATE: one writer at a time)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- the model ---------------------------------------------------------------------------------------------
    def model(self) -> ModelInfo | None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if "checkpoint_sha256" not in meta:
            return None
        return ModelInfo(meta["checkpoint_sha256"], meta.get("checkpoint", ""), meta.get("arch", ""),
                         meta.get("metric", ""))

    def check_model(self, model: ModelInfo) -> None:
        """UserError (naming both) unless the store is empty or holds features of this very checkpoint."""
        mine = self.model()
        if mine is None:
            return
        same = mine.sha256 in (model.sha256, model.source_sha256 or model.sha256)  # the file, or its source
        if not same or (model.arch and mine.arch != model.arch):
            raise UserError(f"its features come from another gait checkpoint ({mine.arch}, {Path(mine.path).name}, "
                            f"sha256 {mine.sha256[:12]}…) than {model.path} (sha256 {model.sha256[:12]}…): use "
                            "that checkpoint or another gallery file", self.path)

    # -- reading -----------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM identities ORDER BY id")]

    def identities(self) -> list[Identity]:
        """Every identity with its tracks' embeddings (video GALLERY_VIDEO, track id = the stored track's id)."""
        rows = self.db.execute(
            "SELECT i.id, i.name, t.id, t.first_frame, t.last_frame, t.n_silhouettes, t.c, t.p, t.feature "
            "FROM identities i JOIN tracks t ON t.identity_id = i.id ORDER BY i.id, t.id").fetchall()
        by: dict[int, tuple[str, list[Embedding]]] = {}
        for iid, name, tid, first, last, n, c, p, blob in rows:
            feat = np.frombuffer(blob, np.float32).reshape(c, p).copy()
            by.setdefault(iid, (name, []))[1].append(Embedding(GALLERY_VIDEO, tid, feat, n, first, last))
        return [Identity(name, tuple(members), key=iid) for iid, (name, members) in by.items()]

    def count_tracks(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])

    def generation(self) -> int:
        """Bumped by every change of the stored features (an index built for another generation is stale)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _bump(self, db) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self.generation() + 1),))

    def identities_by_id(self, ids: list[int]) -> list[Identity]:
        """The identities with these ids, each with all its tracks (in id order)."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        wanted = set(ids)
        rows = self.db.execute(
            "SELECT i.id, i.name, t.id, t.first_frame, t.last_frame, t.n_silhouettes, t.c, t.p, t.feature "
            f"FROM identities i JOIN tracks t ON t.identity_id = i.id WHERE i.id IN ({marks}) ORDER BY i.id, t.id",
            list(wanted)).fetchall()
        by: dict[int, tuple[str, list[Embedding]]] = {}
        for iid, name, tid, first, last, n, c, p, blob in rows:
            feat = np.frombuffer(blob, np.float32).reshape(c, p).copy()
            by.setdefault(iid, (name, []))[1].append(Embedding(GALLERY_VIDEO, tid, feat, n, first, last))
        return [Identity(name, tuple(m), key=iid) for iid, (name, m) in by.items()]

    def _features(self, chunk: int = 20_000):
        """(track ids, flattened features) in chunks, in track id order."""
        last = -1
        while True:
            rows = self.db.execute("SELECT id, feature FROM tracks WHERE id > ? ORDER BY id LIMIT ?",
                                   (last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield (np.array([r[0] for r in rows], np.int64),
                   np.stack([np.frombuffer(r[1], np.float32) for r in rows]))

    def index(self, config):
        """The FAISS index of this file's tracks, built (and kept beside it, ``<file>.faiss``) when missing or stale."""
        from allinone.gallery.search import TrackIndex
        path = self.path.with_name(self.path.name + ".faiss")
        stamp = path.with_name(path.name + ".json")
        gen, n = self.generation(), self.count_tracks()
        if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("generation") == gen:
            return TrackIndex.load(path, config.nprobe)
        log.info("%s: building the search index over %d tracks", self.path, n)
        sample = np.concatenate([f for _, f in self._features()])[:50_000] if n <= 50_000 else \
            np.concatenate([f for _, (_, f) in zip(range(3), self._features())])
        index = TrackIndex.build(self._features(), n, sample.shape[1], sample, config.nprobe)
        tmp = path.with_name(f".{path.name}.tmp")
        index.save(tmp)
        tmp.replace(path)
        stamp.write_text(json.dumps({"generation": gen, "tracks": n, "factory": index.factory}))
        return index

    def candidates(self, probes: list[Embedding], config) -> tuple[list[Identity], dict]:
        """The identities to compare the probes with: all of them for a gallery of at most config.exact_limit
        tracks; else the owners of each probe's index shortlist (every track of them, measured exactly later)."""
        n = self.count_tracks()
        if n <= config.exact_limit or not probes:
            return self.identities(), {"mode": "exact", "tracks": n}
        index = self.index(config)
        q = np.stack([p.feature.reshape(-1) for p in probes]).astype(np.float32)
        tracks = sorted({int(t) for t in index.search(q, config.shortlist).reshape(-1) if t >= 0})
        marks = ",".join("?" * len(tracks))
        owners = [r[0] for r in self.db.execute(
            f"SELECT DISTINCT identity_id FROM tracks WHERE id IN ({marks})", tracks)] if tracks else []
        found = self.identities_by_id(sorted(owners))
        return found, {"mode": "index", "tracks": n, "shortlist": config.shortlist, "nprobe": config.nprobe,
                       "identities_compared": len(found)}

    def pictures(self, track_ids: list[int]) -> dict[int, tuple[bytes | None, bytes | None]]:
        """Stored track id → (crop PNG, GEI PNG), for these tracks."""
        if not track_ids:
            return {}
        marks = ",".join("?" * len(track_ids))
        return {tid: (crop, gei) for tid, crop, gei in self.db.execute(
            f"SELECT id, crop_png, gei_png FROM tracks WHERE id IN ({marks})", list(track_ids))}

    def listing(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT i.name, i.created, COUNT(t.id), GROUP_CONCAT(DISTINCT t.source), SUM(t.n_silhouettes) "
            "FROM identities i LEFT JOIN tracks t ON t.identity_id = i.id GROUP BY i.id ORDER BY i.id").fetchall()
        return [{"name": n, "enrolled": c, "tracks": k, "sources": s or "", "silhouettes": int(sil or 0)}
                for n, c, k, s, sil in rows]

    # -- writing -----------------------------------------------------------------------------------------------
    def add(self, enrolments: list[Enrolment], model: ModelInfo) -> list[str]:
        """Add identities (a name that exists gains the new tracks) in one transaction; returns the names."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.transaction() as db:
            self.check_model(model)  # inside the transaction: no other writer can change the store meanwhile
            self._bump(db)
            if self.model() is None:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("checkpoint_sha256", model.sha256), ("checkpoint", model.path),
                                ("arch", model.arch), ("metric", model.metric), ("schema", "1")])
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
        return [e.name for e in enrolments]

    def rename(self, old: str, new: str) -> None:
        new = new.strip()
        if not new:
            raise UserError("the new name is empty")
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM identities WHERE name = ?", (new,)).fetchone():
                raise UserError(f"an identity named {new!r} exists already", self.path)
            if db.execute("UPDATE identities SET name = ? WHERE name = ?", (new, old)).rowcount == 0:
                raise UserError(f"no identity named {old!r}", self.path)

    def remove(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM identities WHERE name = ?", (name,)).rowcount == 0:
                raise UserError(f"no identity named {name!r}", self.path)
            self._bump(db)

    def export(self, out: Path) -> Path:
        """A folder anyone can read: gallery.json, and per identity its features (.npy), crops and GEIs (.png)."""
        if out.exists() and any(out.iterdir()):
            raise UserError("export folder exists and is not empty", out)
        out.mkdir(parents=True, exist_ok=True)
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
        manifest = {"gallery": str(self.path), "model": None if m is None else m.__dict__,
                    "identities": [{"name": n, "folder": f"{i:03d}", "tracks": t}
                                   for i, (n, t) in enumerate(people.items())]}
        (out / "gallery.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return out
