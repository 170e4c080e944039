"""The gallery file is careful with what is not its own: foreign files refused unchanged, read-only opens, the name
check inside the enrol transaction (two processes at once), the model's metric and embedding checked, backup and
check, damaged and unreadable files told apart."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from allinone.errors import UserError
from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
from allinone.records import Embedding, TrackResult
from tests.helpers import at_once
from tests.test_cli import _assert_user_error, run_main

MODEL = ModelInfo("ab" * 32, "m.pt", "gaitbase", "euc")


def _track(tid: int, seed: int) -> TrackResult:
    f = np.random.default_rng(seed).normal(size=(8, 2)).astype(np.float32)
    return TrackResult(tid, 0, 9, 10, 10, {}, Embedding("v", tid, f, 10, 0, 9))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _foreign(path: Path, journal: str = "delete", app: int = 0) -> None:
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA journal_mode={journal}")
    con.execute(f"PRAGMA application_id={app}")
    con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    con.execute("INSERT INTO orders (item) VALUES ('tea')")
    con.commit()
    con.close()


@pytest.mark.parametrize("journal,app", [("delete", 0), ("wal", 0), ("wal", 12345)])
@pytest.mark.parametrize("action", [["list"], ["export", "out"], ["remove", "x"], ["rename", "a", "b"],
                                    ["backup", "copy.sqlite"], ["check"]])
def test_another_applications_sqlite_file_is_refused_and_left_unchanged(tmp_path, action, journal, app):
    folder = tmp_path / "f"
    folder.mkdir()
    db = folder / "shop.sqlite"
    _foreign(db, journal, app)
    before = _snapshot(folder)
    args = [a if a not in ("out", "copy.sqlite") else str(tmp_path / a) for a in action]
    res = run_main("gallery", "--gallery-db", str(db), *args)
    _assert_user_error(res, "shop.sqlite", "not an allinone gallery file", "left unchanged")
    assert _snapshot(folder) == before  # same bytes, and no -wal / -shm / index files beside it
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == journal


def test_enrolling_into_a_foreign_or_non_sqlite_file_changes_nothing(tmp_path):
    db = tmp_path / "shop.sqlite"
    _foreign(db)
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 20)
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="not an allinone gallery file"):
        GalleryStore(db, create=True)
    with pytest.raises(UserError, match="not a gallery file .not an SQLite database"):
        GalleryStore(text, create=True)
    assert _snapshot(tmp_path) == before


def test_list_opens_read_only(tmp_path):
    db = tmp_path / "g.sqlite"
    with GalleryStore(db, create=True) as store:
        store.add([Enrolment("Ann", "a.mp4", [_track(1, 0)])], MODEL)
    os.chmod(db, 0o444)  # a file that cannot be written: list still works
    try:
        res = run_main("gallery", "--gallery-db", str(db), "list")
        assert res.returncode == 0, res.stderr
        assert "Ann" in res.stdout and ": 1 identity" in res.stdout and "1 identities" not in res.stdout
        assert "Ann\t1 track," in res.stdout
        with GalleryStore(db, readonly=True) as store:
            with pytest.raises(Exception):
                store.db.execute("INSERT INTO identities (name, created) VALUES ('X', 'now')")
    finally:
        os.chmod(db, 0o644)


def test_a_new_file_carries_the_marker_and_an_old_one_is_accepted(tmp_path):
    db = tmp_path / "g.sqlite"
    GalleryStore(db, create=True).close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x416C4931
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    old = tmp_path / "old.sqlite"  # a file of an allinone from before the marker: our tables, application_id 0
    from allinone.gallery.store import SCHEMA
    con = sqlite3.connect(old)
    con.executescript(SCHEMA)
    con.close()
    with GalleryStore(old) as store:
        store.add([Enrolment("Ann", "a.mp4", [_track(1, 0)])], MODEL)
    assert sqlite3.connect(old).execute("PRAGMA application_id").fetchone()[0] == 0x416C4931


def _enrol_one(db: str, barrier, out) -> None:
    barrier.wait()
    try:
        with GalleryStore(db, create=True) as store:
            store.add([Enrolment("cam-G1", "cam.mp4", [_track(1, os.getpid())])], MODEL, new_names=True)
        out.put("ok")
    except UserError as exc:
        out.put(str(exc))


def test_two_processes_enrolling_one_name_at_once_never_merge_two_people(tmp_path):
    for round_ in range(3):
        db = str(tmp_path / f"race{round_}.sqlite")
        results = at_once(_enrol_one, db)
        assert results[1] == "ok" and "exist already" in results[0], results
        with GalleryStore(db) as store:
            assert store.names() == ["cam-G1"] and len(store.identities()[0].members) == 1


def test_the_metric_and_the_embedding_are_checked_like_the_checkpoint(tmp_path):
    db = tmp_path / "g.sqlite"
    with GalleryStore(db, create=True) as store:
        store.add([Enrolment("Ann", "a.mp4", [_track(1, 0)])], MODEL)
        with pytest.raises(UserError, match="compared by the euc metric, this run uses cos"):
            store.check_model(ModelInfo(MODEL.sha256, "m.pt", "gaitbase", "cos"))
        with pytest.raises(UserError, match="embed_1 output, this run uses embed_2"):
            store.check_model(ModelInfo(MODEL.sha256, "m.pt", "gaitbase", "euc", "embed_2"))
        with pytest.raises(UserError, match="another gait checkpoint"):
            store.check_model(ModelInfo("cd" * 32, "n.pt", "gaitbase", "euc"))
        store.check_model(ModelInfo(MODEL.sha256, "m.pt", "", "", ""))  # unknown parts are not compared
        with pytest.raises(UserError, match="embed_2"):
            store.add([Enrolment("Bob", "b.mp4", [_track(2, 1)])],
                      ModelInfo(MODEL.sha256, "m.pt", "gaitbase", "euc", "embed_2"))
        assert store.names() == ["Ann"]


def test_backup_and_check(tmp_path):
    db = tmp_path / "g.sqlite"
    with GalleryStore(db, create=True) as store:
        store.add([Enrolment("Ann", "a.mp4", [_track(1, 0)]), Enrolment("Bob", "b.mp4", [_track(2, 1)])], MODEL)
        reader = GalleryStore(db, readonly=True)
        with store.transaction() as tx:  # an enrol in flight while the backup runs: it sees the state before
            tx.execute("INSERT INTO identities (name, created) VALUES ('Cy', 'now')")
            res = run_main("gallery", "--gallery-db", str(db), "backup", str(tmp_path / "copy.sqlite"))
            assert res.returncode == 0, res.stderr
        reader.close()
    with GalleryStore(tmp_path / "copy.sqlite") as copy:
        assert copy.names() == ["Ann", "Bob"] and copy.model() == MODEL
    res = run_main("gallery", "--gallery-db", str(db), "check")
    assert res.returncode == 0 and res.stdout.count("\n") == 1
    assert "ok: 3 identities, 2 tracks" in res.stdout
    _assert_user_error(run_main("gallery", "--gallery-db", str(db), "backup", str(tmp_path / "copy.sqlite")),
                       "copy.sqlite", "exists already")


def _damage(db: Path) -> None:
    """Overwrite the middle of the file's second page (a table's b-tree page) with garbage."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page + 8: 2 * page - 8] = b"\xff" * (page - 16)
    db.write_bytes(bytes(data))


def test_a_damaged_file_is_called_damaged_not_foreign(tmp_path):
    db = tmp_path / "g.sqlite"
    with GalleryStore(db, create=True) as store:
        store.add([Enrolment(f"P{i}", "a.mp4", [_track(i, i)]) for i in range(200)], MODEL)
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    _damage(db)
    res = run_main("gallery", "--gallery-db", str(db), "check")
    assert res.returncode == 1 and res.stdout.startswith(f"{db}: damaged"), (res.stdout, res.stderr)
    res = run_main("gallery", "--gallery-db", str(db), "list")
    _assert_user_error(res, "g.sqlite", "damaged", "gallery check")
    assert "not a gallery" not in res.stderr
