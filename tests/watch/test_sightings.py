"""The sightings database: numbering that survives restarts, retention of rows and files together, a kill -9 in
the middle of writes, paging over 10,000 sightings, and the unknown-id rule across cameras."""
from __future__ import annotations

import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from allinone.errors import UserError
from allinone.watch.sightings import Sighting, Sightings
from tests.conftest import REPO

DAY = 86400.0
T0 = 1_700_000_000.0  # a wall time (unix seconds) the synthetic sightings start at


def _unknown(camera: str, track: int, first: float, last: float, uid: str | None = None, emb=None, **kw) -> Sighting:
    return Sighting(camera, track, first, last, 0, 10, "unknown", unknown_id=uid, reason="no_candidate",
                    n_silhouettes=10, embedding=emb, **kw)


def _feature(seed: int, shape=(16, 4)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture
def db(tmp_path: Path):
    with Sightings(tmp_path / "out" / "sightings.db") as s:
        yield s


# --- numbering -------------------------------------------------------------------------------------------------


def test_a_restart_continues_sighting_ids_and_unknown_numbers(tmp_path):
    path = tmp_path / "sightings.db"
    with Sightings(path) as s:
        u1 = s.unknown_id_for(_feature(1), T0, T0 + 5, "hall", 0.5)
        ids = [s.add(_unknown("hall", 1, T0, T0 + 5, u1, _feature(1)))]
        u2 = s.unknown_id_for(_feature(2), T0 + 10, T0 + 15, "hall", 0.5)
        ids.append(s.add(_unknown("hall", 2, T0 + 10, T0 + 15, u2, _feature(2))))
        assert (ids, u1, u2) == ([1, 2], "U1", "U2")
        assert s.retain(1, now=T0 + 2 * DAY) == 2  # every row gone, the newest id and U2 with them
    with Sightings(path) as s:
        assert s.page() == []
        assert s.add(_unknown("hall", 3, T0 + 3 * DAY, T0 + 3 * DAY + 5)) == 3  # never reused
        assert s.unknown_id_for(_feature(1), T0 + 3 * DAY, T0 + 3 * DAY + 5, "hall", 0.5) == "U3"
        # an id given by hand moves the counter past it
        s.add(_unknown("hall", 4, T0 + 4 * DAY, T0 + 4 * DAY + 5, "U9"))
        assert s.unknown_id_for(_feature(5), T0 + 5 * DAY, T0 + 5 * DAY + 5, "hall", 0.0) == "U10"


def test_a_stored_sighting_reads_back_whole(db):
    e = _feature(3, (256, 16))
    s = Sighting("hall", 7, T0, T0 + 2.5, 100, 175, "match", identity="Ann", distance=0.31, threshold=0.5,
                 lr=12.5, verbal="moderate support", n_silhouettes=60, clip="clips/7.mp4", crop="crops/7.jpg",
                 gei="geis/7.png", segment="segments/hall-0001.mp4", runners_up=(("Ann", 0.31), ("Bob", 0.9)),
                 embedding=e)
    got = db.get(db.add(s))
    for f in ("camera", "track", "first_wall", "last_wall", "first_frame", "last_frame", "status", "identity",
              "unknown_id", "distance", "threshold", "lr", "verbal", "reason", "n_silhouettes", "clip", "crop",
              "gei", "segment", "runners_up"):
        assert getattr(got, f) == getattr(s, f), f
    assert got.id == 1 and got.embedding.dtype == np.float32 and np.array_equal(got.embedding, e)
    assert db.page()[0].embedding is None  # listings leave the 16 KB embeddings out
    assert db.get(2) is None


@pytest.mark.parametrize("kw, says", [
    (dict(clip="/etc/passwd"), "clip must be a path inside the output folder"),
    (dict(crop="../../x.jpg"), "crop must be a path inside the output folder"),
    (dict(status="match", reason=None), "a match names its identity"),
    (dict(identity="Ann"), "carries a name only as a named unknown id"),
    (dict(unknown_id="V3"), "an unknown id is U<n>"),
    (dict(lr=3.0), "an LR comes with its verbal equivalent"),
    (dict(embedding=np.zeros((4, 4), np.float64)), "embedding must be a finite float32"),
    (dict(runners_up=[("Ann", 0.3)]), "runners_up must be a tuple"),
    (dict(first_wall=T0 + 9), "bad wall span"),
    (dict(camera="a/b"), "bad camera name"),
])
def test_a_malformed_sighting_is_refused_on_construction(kw, says):
    base = dict(camera="hall", track=1, first_wall=T0, last_wall=T0 + 1, first_frame=0, last_frame=5,
                status="unknown", reason="no_candidate")
    with pytest.raises(ValueError, match=says):
        Sighting(**{**base, **kw})


def test_another_programs_database_is_refused_and_left_alone(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(UserError, match="not a sightings database"):
        Sightings(other)
    assert other.read_bytes() == before
    (tmp_path / "text.db").write_text("hello, this is not SQLite at all" * 10)
    with pytest.raises(UserError, match="not a sightings database"):
        Sightings(tmp_path / "text.db")


# --- retention -------------------------------------------------------------------------------------------------


def _with_files(db: Sightings, track: int, last: float) -> tuple[int, list[Path]]:
    rel = [f"clips/{track}.mp4", f"crops/{track}.jpg", f"geis/{track}.png"]
    for r in rel:
        (db.root / r).parent.mkdir(parents=True, exist_ok=True)
        (db.root / r).write_bytes(b"x")
    sid = db.add(_unknown("hall", track, last - 5, last, clip=rel[0], crop=rel[1], gei=rel[2]))
    return sid, [db.root / r for r in rel]


def _rows_point_at_files(db: Sightings) -> bool:
    return all(db.media(p).is_file() for s in db.page(limit=1000) for p in (s.clip, s.crop, s.gei) if p)


def test_retention_deletes_old_rows_and_their_files_together(db):
    now = T0 + 40 * DAY
    old = [_with_files(db, t, T0 + t) for t in range(3)]  # 40 days old
    new = [_with_files(db, t, now - DAY) for t in range(3, 5)]  # one day old
    assert db.retain(30, now=now) == 3
    assert [s.id for s in db.page()] == [sid for sid, _ in reversed(new)]
    assert not any(f.exists() for _, files in old for f in files)
    assert all(f.exists() for _, files in new for f in files)
    assert db.retain(0, now=now + 1000 * DAY) == 0  # 0 days keeps everything
    assert len(db.page()) == 2


def test_a_crash_between_the_rows_and_the_files_leaves_no_row_without_its_file(tmp_path, monkeypatch):
    path = tmp_path / "sightings.db"
    with Sightings(path) as db:
        _, files = _with_files(db, 1, T0)
        kept, _ = _with_files(db, 2, T0 + 40 * DAY)

        def killed() -> None:
            raise KeyboardInterrupt("killed after the rows' commit")
        monkeypatch.setattr(db, "_remove_doomed", killed)
        with pytest.raises(KeyboardInterrupt):
            db.retain(30, now=T0 + 40 * DAY)
        assert [s.id for s in db.page()] == [kept] and _rows_point_at_files(db)
        assert all(f.exists() for f in files)  # orphans for now, listed in doomed_files
    monkeypatch.undo()
    with Sightings(path) as db:  # the next open finishes the job
        assert not any(f.exists() for f in files) and _rows_point_at_files(db)
        assert db._select("SELECT count(*) FROM doomed_files")[0][0] == 0


def test_media_paths_stay_inside_the_output_folder(db, tmp_path):
    assert db.media("clips/1.mp4") == (db.root / "clips" / "1.mp4").resolve()
    with pytest.raises(ValueError):
        db.media("../sightings.db")
    (db.root / "escape").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="leads out of the output folder"):
        db.media("escape/secret")


# --- kill -9 ---------------------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from allinone.watch.sightings import Sighting, Sightings
    db = Sightings(sys.argv[1])
    i = 0
    while True:
        i += 1
        s = Sighting("hall", i, 1e9 + i, 1e9 + i + 1, i, i + 10, "unknown", unknown_id=f"U{i}",
                     reason="no_candidate", n_silhouettes=i, embedding=np.full((256, 16), i, np.float32),
                     clip=f"clips/{i}.mp4", runners_up=(("Ann", 0.5 + i),))
        print(db.add(s), flush=True)  # printed only once committed
""")


def _expected(i: int) -> tuple:
    return ("hall", i, 1e9 + i, 1e9 + i + 1, f"U{i}", i, f"clips/{i}.mp4", (("Ann", 0.5 + i),))


def test_kill_9_in_the_middle_of_adding_loses_no_committed_sighting(tmp_path):
    path = tmp_path / "sightings.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(REPO)], stdout=subprocess.PIPE, text=True)
    committed = []
    try:
        deadline = time.monotonic() + 120
        while len(committed) < 150 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the child ended early"
            committed.append(int(line))
        os.kill(child.pid, signal.SIGKILL)  # while it is adding more
    finally:
        child.kill()
        rest = child.stdout.read()
        child.wait()
    committed += [int(x) for x in rest.split()]
    assert child.returncode == -signal.SIGKILL and len(committed) >= 150
    con = sqlite3.connect(path)  # a plain open, as any tool would
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    stored = con.execute("SELECT count(*) FROM sightings").fetchone()[0]
    con.close()
    assert committed == list(range(1, len(committed) + 1)) and stored in (len(committed), len(committed) + 1)
    with Sightings(path) as db:
        for i in committed:
            s = db.get(i)
            assert (s.camera, s.track, s.first_wall, s.last_wall, s.unknown_id, s.n_silhouettes, s.clip,
                    s.runners_up) == _expected(i)
            assert np.array_equal(s.embedding, np.full((256, 16), i, np.float32))
        assert db.add(_unknown("hall", 0, T0, T0 + 1)) == stored + 1


# --- paging ----------------------------------------------------------------------------------------------------

CAMERAS = ("hall", "corridor", "yard", "gate")
NAMES = ("Ann", "Bob", "Cy")
N = 10_000


def _synthetic(i: int) -> Sighting:
    """Sighting i of N: spread over cameras, people, unknown ids, too-short tracks, 30 s apart."""
    cam, first = CAMERAS[i % 4], T0 + 30.0 * i
    if i % 5 == 0:
        return Sighting(cam, i, first, first + 8, 0, 200, "too_short", reason="too_few_silhouettes")
    if i % 5 in (1, 2):
        return Sighting(cam, i, first, first + 8, 0, 200, "match", identity=NAMES[i % 3], distance=0.2,
                        threshold=0.5, runners_up=((NAMES[i % 3], 0.2),))
    return _unknown(cam, i, first, first + 8, f"U{1 + i % 97}", distance=0.9, threshold=0.5)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    rows = [_synthetic(i) for i in range(N)]
    with Sightings(tmp_path_factory.mktemp("big") / "sightings.db") as db:
        ids = db.add_many(rows)
        yield db, {sid: s for sid, s in zip(ids, rows)}


def _wanted(rows: dict, camera=None, person=None, since=None, until=None, status=None) -> list[int]:
    def ok(s: Sighting) -> bool:
        who = {None: True, "unknown": s.identity is None, "named": s.identity is not None}.get(
            person, person in (s.identity, s.unknown_id))
        return (camera in (None, s.camera) and who and status in (None, s.status)
                and (since is None or s.last_wall >= since) and (until is None or s.first_wall <= until))
    return sorted((sid for sid, s in rows.items() if ok(s)), reverse=True)


FILTERS = [
    {}, {"camera": "yard"}, {"person": "Bob"}, {"person": "U17"}, {"person": "unknown"}, {"person": "named"},
    {"status": "too_short"}, {"since": T0 + 30.0 * 9000}, {"until": T0 + 30.0 * 500},
    {"since": T0 + 30.0 * 2000, "until": T0 + 30.0 * 2600, "camera": "gate", "person": "Cy"},
    {"camera": "hall", "status": "unknown", "person": "U42"}, {"person": "Nobody"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=[",".join(f) or "none" for f in FILTERS])
def test_paging_walks_every_matching_sighting_newest_first(big, filters):
    db, rows = big
    want, got, before = _wanted(rows, **filters), [], None
    while True:
        page = db.page(**filters, limit=500, before_id=before)
        got += [s.id for s in page]
        if len(page) < 500:
            break
        before = page[-1].id
    assert got == want
    first = db.page(**filters)
    assert [s.id for s in first] == want[:50]
    assert all(s.embedding is None and s.camera == rows[s.id].camera for s in first)


def test_a_page_of_50_out_of_10000_takes_under_100_ms(big):
    db, _ = big
    worst = {}
    for filters in FILTERS:
        times = []
        for before in (None, 5000, 100):
            t = time.perf_counter()
            db.page(**filters, before_id=before)
            times.append(time.perf_counter() - t)
        worst[",".join(filters) or "none"] = statistics.median(times)
    print("page of 50 out of 10,000, median seconds by filter:", {k: round(v, 5) for k, v in worst.items()})
    assert max(worst.values()) < 0.1, worst


def test_a_persons_sightings_in_time_order_and_the_cameras(big):
    db, rows = big
    bob = db.person("Bob")
    assert [s.id for s in bob] == sorted(sid for sid, s in rows.items() if s.identity == "Bob")
    assert [s.first_wall for s in bob] == sorted(s.first_wall for s in bob)
    assert {s.unknown_id for s in db.person("U5")} == {"U5"}
    summary = {c.camera: c for c in db.cameras()}
    assert set(summary) == set(CAMERAS) and sum(c.sightings for c in summary.values()) == N
    hall = summary["hall"]
    assert (hall.sightings, hall.too_short) == (N // 4, N // 20)
    assert hall.matched + hall.unknown + hall.too_short == hall.sightings
    assert hall.last_id == max(sid for sid, s in rows.items() if s.camera == "hall")


@pytest.mark.parametrize("kw, says", [
    (dict(limit=0), "limit must be 1 to 1000"), (dict(limit=1001), "limit must be 1 to 1000"),
    (dict(status="maybe"), "status must be one of match, unknown, too_short"),
    (dict(since=T0 + 10, until=T0), "the time range ends before it starts"),
    (dict(since=float("nan")), "since must be a time"), (dict(before_id=0), "a sighting id is a whole number"),
    (dict(person=""), "person must be a name"),
])
def test_bad_page_arguments_are_user_errors(db, kw, says):
    with pytest.raises(UserError, match=says):
        db.page(**kw)


# --- unknown ids -----------------------------------------------------------------------------------------------


def _seen(db: Sightings, camera: str, first: float, last: float, emb: np.ndarray, threshold: float = 1.0,
          together_ok=None) -> str:
    """What the service will do when an unknown track ends: its id, then the sighting stored."""
    uid = db.unknown_id_for(emb, first, last, camera, threshold, "euc", together_ok)
    db.add(_unknown(camera, 1, first, last, uid, emb))
    return uid


def _near(e: np.ndarray, seed: int, scale: float = 0.01) -> np.ndarray:
    return e + _feature(seed, e.shape) * scale


def test_the_same_person_later_on_another_camera_gets_the_same_unknown_id(db):
    ann = _feature(1)
    assert _seen(db, "hall", T0, T0 + 10, ann) == "U1"
    assert _seen(db, "corridor", T0 + 30, T0 + 40, _near(ann, 2)) == "U1"
    assert _seen(db, "hall", T0 + 600, T0 + 610, _near(ann, 3)) == "U1"
    assert [s.camera for s in db.person("U1")] == ["hall", "corridor", "hall"]


def test_two_people_seen_at_the_same_moment_get_two_ids(db):
    ann = _feature(1)
    assert _seen(db, "hall", T0, T0 + 10, ann) == "U1"
    # as near as can be, but at the same moment on a camera that does not overlap the hall: someone else
    assert _seen(db, "corridor", T0 + 5, T0 + 15, ann.copy()) == "U2"
    # one camera never shows one person twice at once, whatever the overlaps say: not U1; the corridor may see
    # the hall's people at once here, so U2 stays possible
    assert _seen(db, "hall", T0 + 8, T0 + 20, ann.copy(), together_ok=lambda a, b: True) == "U2"
    # a moment that meets both on cameras that do not overlap the yard: neither can be this person
    assert _seen(db, "yard", T0 + 9, T0 + 9.5, ann.copy()) == "U3"


def test_cameras_that_overlap_may_see_one_person_at_the_same_moment(db):
    ann = _feature(1)
    overlap = {frozenset(("hall", "stairs"))}

    def together_ok(a: str, b: str) -> bool:
        return frozenset((a, b)) in overlap
    assert _seen(db, "hall", T0, T0 + 10, ann, together_ok=together_ok) == "U1"
    assert _seen(db, "stairs", T0 + 5, T0 + 12, _near(ann, 2), together_ok=together_ok) == "U1"
    assert _seen(db, "yard", T0 + 11, T0 + 13, _near(ann, 3), together_ok=together_ok) == "U2"  # seen on stairs


def test_beyond_the_threshold_is_a_new_id_and_the_nearest_wins(db):
    ann, bob = _feature(1), _feature(2)
    assert _seen(db, "hall", T0, T0 + 10, ann) == "U1"
    assert _seen(db, "hall", T0 + 20, T0 + 30, bob) == "U2"
    d_ab = float(np.linalg.norm(ann - bob, axis=0).mean())  # OpenGait's euc: per part, then the mean
    assert _seen(db, "gate", T0 + 100, T0 + 110, _near(ann, 3, 0.5), threshold=0.01) == "U3"  # beyond
    # within the threshold of both ann and bob: the nearer one (bob) wins
    assert _seen(db, "gate", T0 + 200, T0 + 210, _near(bob, 4), threshold=2 * d_ab) == "U2"


def test_a_named_unknown_id_is_the_gallerys_and_not_linked_again(db):
    ann = _feature(1)
    assert _seen(db, "hall", T0, T0 + 10, ann) == "U1"
    assert db.rename_unknown("U1", "Ann") == 1
    assert [s.identity for s in db.person("Ann")] == ["Ann"] and db.page(person="named")[0].unknown_id == "U1"
    assert _seen(db, "corridor", T0 + 30, T0 + 40, _near(ann, 2)) == "U2"
    assert db.rename_unknown("U99", "Zed") == 0
    for bad in ("", "unknown", "named", "U4", "a:b", "x" * 101):
        with pytest.raises(UserError):
            db.rename_unknown("U2", bad)
    with pytest.raises(UserError, match="not an unknown id"):
        db.rename_unknown("Ann", "Bob")
