"""The enrolled gallery: enrol once, identify many times; foreign checkpoints refused; atomic, isolated changes."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
from allinone.gait.checkpoint import save_gaitbase_checkpoint
from allinone.gait.gaitbase import GaitBase
from allinone.records import Embedding, TrackResult
from tests.helpers import float32_distance_bound, looped_ts_server
from tests.test_cli import _assert_user_error, run_main


@pytest.fixture(scope="module")
def ckpt(random_gaitbase) -> Path:
    return random_gaitbase


def _models(shared, ckpt):
    return ["--detector", str(shared / "weights/yolox_nano.onnx"),
            "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--gait-model", str(ckpt), "--quiet"]


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, shared, ckpt):
    db = tmp_path_factory.mktemp("db") / "people.sqlite"
    v = shared / "fixtures/videos"
    loud = [a for a in _models(shared, ckpt) if a != "--quiet"]  # everything it says, as a user sees it
    res = run_main("enroll", str(v / "demo1.mp4"), "--name", "Ann", "--gallery-db", str(db), *loud)
    assert res.returncode == 0, res.stderr
    # it names the gallery file it changed, and no temporary folder that is gone once it returns
    assert res.stdout.strip().splitlines()[-1] == f"enrolled Ann (1 track) in {db}"
    assert "allinone-enrol-" not in res.stdout + res.stderr
    # an enrol decides nothing: no note on a threshold; counts in the right number
    assert "threshold" not in res.stdout + res.stderr, res.stderr
    assert "demo1: 118 frames, 1 track," in res.stderr and "1 tracks" not in res.stderr
    res = run_main("enroll", str(v / "plaza_gallery_boxed.mp4"), "--gallery-db", str(db), *_models(shared, ckpt))
    assert res.returncode == 0, res.stderr
    return db


def test_enrolled_identities_and_their_records(enrolled, ckpt):
    with GalleryStore(enrolled) as store:
        names = store.names()
        ids = store.identities()
        model = store.model()
    assert names[0] == "Ann" and len(names) == 5
    assert names[1:] == [f"plaza_gallery_boxed-G{i}" for i in (1, 2, 3, 4)]  # one identity per plaza walker
    assert all(len(i.members) == 1 and i.members[0].feature.shape == (256, 16) for i in ids)
    assert model.arch == "gaitbase" and model.metric == "euc" and model.path == str(ckpt)
    # the segmenter its silhouettes came from (the digest published in ../shared/README.md); no pose model read
    assert model.inputs.segmenter.sha256 == "20948f5f82a0ef020f8dd5d59a919b792936cbdf0e4beb49ac8b61f56f89fd0f"
    assert model.inputs.pose.sha256 == ""
    db = sqlite3.connect(enrolled)
    crop, gei, src = db.execute("SELECT crop_png, gei_png, source FROM tracks t JOIN identities i "
                                "ON t.identity_id = i.id WHERE i.name = 'Ann'").fetchone()
    assert crop[:8] == gei[:8] == b"\x89PNG\r\n\x1a\n" and src.endswith("demo1.mp4")


def test_identify_with_the_gallery_file_never_recomputes_it(enrolled, shared, ckpt, tmp_path):
    v = shared / "fixtures/videos"
    res = run_main("--gallery-db", str(enrolled), "--probe", str(v / "demo2.mp4"), "--threshold", "1e9",
                   "--output", str(tmp_path), "--name", "r", *_models(shared, ckpt))
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "r/run.json").read_text())
    assert [x["role"] for x in m["videos"]] == ["probe"]  # no gallery video was processed
    assert m["gallery_db"] == str(enrolled)
    assert [i["name"] for i in m["identities"]][:1] == ["Ann"] and len(m["identities"]) == 5
    with GalleryStore(enrolled) as store:
        stored = {i.name: i.members[0].feature for i in store.identities()}
    feat = np.load(tmp_path / "r" / m["videos"][0]["tracks"][0]["feature"])
    for r in m["matches"]:
        assert r["status"] == "match"
        # the ranking's distances are to the stored features themselves
        d = {x["identity"]: x["distance"] for x in r["ranking"]}
        want = float(np.mean(np.sqrt(((feat.astype(np.float64) - stored["Ann"]) ** 2).sum(axis=0))))
        tol = float32_distance_bound(feat[None], stored["Ann"][None])[0, 0]
        assert d["Ann"] == pytest.approx(want, abs=tol)
    assert (tmp_path / "r" / "G-people_P-demo2.mp4").is_file()


def test_a_foreign_checkpoint_is_refused_by_name(enrolled, shared, tmp_path):
    torch.manual_seed(5)
    other = tmp_path / "other.pt"
    save_gaitbase_checkpoint(GaitBase(class_num=7), other)
    v = shared / "fixtures/videos"
    res = run_main("--gallery-db", str(enrolled), "--probe", str(v / "demo2.mp4"), "--output", str(tmp_path),
                   *_models(shared, other))
    _assert_user_error(res, enrolled.name, "another gait checkpoint", "other.pt")
    before = enrolled.read_bytes()
    res = run_main("enroll", str(v / "demo2.mp4"), "--name", "Bob", "--gallery-db", str(enrolled),
                   *_models(shared, other))
    _assert_user_error(res, enrolled.name, "another gait checkpoint")
    with GalleryStore(enrolled) as store:
        assert "Bob" not in store.names()
    assert enrolled.read_bytes() == before


def test_enrolling_a_name_again_says_it_added_a_track(enrolled, shared, ckpt, tmp_path):
    db = tmp_path / "copy.sqlite"
    with sqlite3.connect(enrolled) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    res = run_main("enroll", str(shared / "fixtures/videos/demo2.mp4"), "--name", "Ann", "--gallery-db", str(db),
                   *_models(shared, ckpt))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == f"added 1 track to Ann (now 2 tracks) in {db}"
    with GalleryStore(db) as store:
        assert len(next(i for i in store.identities() if i.name == "Ann").members) == 2
    res = run_main("gallery", "--gallery-db", str(db), "list")
    assert "5 identities" in res.stdout and "Ann\t2 tracks" in res.stdout, res.stdout


def _with_seg(args: list[str], seg: Path) -> list[str]:
    return [str(seg) if a.endswith("pphumanseg_onnx_model.onnx") else a for a in args]


def test_features_of_another_segmenter_are_refused_by_name(enrolled, shared, ckpt, tmp_path):
    # Ann was enrolled from the ONNX PP-HumanSeg's silhouettes; the Paddle PP-HumanSeg is another segmenter
    paddle = shared / "weights/pphumanseg_v1_lite_192x192_with_softmax"
    v = shared / "fixtures/videos"
    res = run_main("--gallery-db", str(enrolled), "--probe", str(v / "demo2.mp4"), "--output", str(tmp_path),
                   *_with_seg(_models(shared, ckpt), paddle))
    _assert_user_error(res, enrolled.name, "enrolled with segmenter model pphumanseg_onnx_model.onnx",
                       "this run uses pphumanseg_v1_lite_192x192_with_softmax")
    assert res.returncode == 2
    before = enrolled.read_bytes()
    res = run_main("enroll", str(v / "demo2.mp4"), "--name", "Bob", "--gallery-db", str(enrolled),
                   *_with_seg(_models(shared, ckpt), paddle))
    _assert_user_error(res, enrolled.name, "enrolled with segmenter model pphumanseg_onnx_model.onnx")
    assert enrolled.read_bytes() == before


def test_a_gallery_enrolled_before_the_segmenter_was_recorded_is_accepted_with_a_warning(enrolled, shared, ckpt,
                                                                                         tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(enrolled) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM meta WHERE key = 'inputs'")
    paddle = shared / "weights/pphumanseg_v1_lite_192x192_with_softmax"
    res = run_main("--gallery-db", str(db), "--probe", str(shared / "fixtures/videos/demo2.mp4"), "--threshold",
                   "1e9", "--output", str(tmp_path), "--name", "r",
                   *[a for a in _with_seg(_models(shared, ckpt), paddle) if a != "--quiet"])
    assert res.returncode == 0, res.stderr
    assert "segmenter is unknown" in res.stderr and "pphumanseg_v1_lite_192x192_with_softmax" in res.stderr


def _track(tid: int, seed: int) -> TrackResult:
    f = np.random.default_rng(seed).normal(size=(8, 2)).astype(np.float32)
    return TrackResult(tid, 0, 9, 10, 10, {}, Embedding("v", tid, f, 10, 0, 9))


def test_a_failed_enrol_leaves_the_store_as_it_was(tmp_path):
    db = tmp_path / "g.sqlite"
    model = ModelInfo("ab" * 32, "m.pt", "gaitbase", "euc")
    with GalleryStore(db, create=True) as store:
        store.add([Enrolment("Ann", "a.mp4", [_track(1, 0)])], model)
        before = (store.names(), [i.members[0].feature for i in store.identities()])

        class Broken(TrackResult):  # its feature fails on write, after Bob's identity row went in
            @property
            def embedding(self):
                raise KeyboardInterrupt

            @embedding.setter
            def embedding(self, value):
                pass

        bad = Broken(2, 0, 9, 10, 10, {})
        with pytest.raises(KeyboardInterrupt):
            store.add([Enrolment("Bob", "b.mp4", [_track(3, 1)]), Enrolment("Cy", "c.mp4", [bad])], model)
        assert store.names() == before[0] == ["Ann"]
        np.testing.assert_array_equal(store.identities()[0].members[0].feature, before[1][0])


def test_readers_see_the_old_or_the_new_state(tmp_path):
    db = tmp_path / "g.sqlite"
    model = ModelInfo("cd" * 32, "m.pt", "gaitbase", "euc")
    writer = GalleryStore(db, create=True)
    writer.add([Enrolment("Ann", "a.mp4", [_track(1, 0)])], model)
    reader = GalleryStore(db)
    with writer.transaction() as tx:  # an enrol in flight in another connection
        tx.execute("INSERT INTO identities (name, created) VALUES ('Bob', 'now')")
        assert reader.names() == ["Ann"]  # not half of it
    assert reader.names() == ["Ann", "Bob"]
    writer.close()
    reader.close()


def test_gallery_list_rename_remove_export(enrolled, tmp_path):
    copy = tmp_path / "copy.sqlite"
    with sqlite3.connect(enrolled) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    res = run_main("gallery", "--gallery-db", str(copy), "list")
    assert res.returncode == 0 and "Ann" in res.stdout and "5 identities" in res.stdout
    assert run_main("gallery", "--gallery-db", str(copy), "rename", "plaza_gallery_boxed-G2", "Cleo").returncode == 0
    assert run_main("gallery", "--gallery-db", str(copy), "remove", "plaza_gallery_boxed-G4").returncode == 0
    _assert_user_error(run_main("gallery", "--gallery-db", str(copy), "rename", "Nobody", "X"), "Nobody")
    _assert_user_error(run_main("gallery", "--gallery-db", str(copy), "rename", "Ann", "Cleo"), "Cleo")
    res = run_main("gallery", "--gallery-db", str(copy), "export", str(tmp_path / "exp"))
    assert res.returncode == 0, res.stderr
    g = json.loads((tmp_path / "exp/gallery.json").read_text())
    assert [i["name"] for i in g["identities"]] == ["Ann", "plaza_gallery_boxed-G1", "Cleo", "plaza_gallery_boxed-G3"]
    first = g["identities"][0]["tracks"][0]
    assert np.load(tmp_path / "exp" / first["feature"]).shape == (256, 16)
    assert (tmp_path / "exp" / first["crop"]).read_bytes()[:4] == b"\x89PNG"
    _assert_user_error(run_main("gallery", "--gallery-db", str(tmp_path / "none.sqlite"), "list"), "none.sqlite")


def test_rematch_of_a_gallery_file_run_reproduces_it_after_the_file_changes(enrolled, shared, ckpt, tmp_path):
    db = tmp_path / "people.sqlite"
    with sqlite3.connect(enrolled) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    v = shared / "fixtures/videos"
    res = run_main("--gallery-db", str(db), "--probe", str(v / "demo2.mp4"), "--threshold", "1e9",
                   "--output", str(tmp_path), "--name", "r", *_models(shared, ckpt))
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "r/run.json").read_text())
    assert m["gallery_features"] == "gallery_features.npz" and (tmp_path / "r/gallery_features.npz").is_file()
    assert m["search"]["mode"] == "exact"
    taken = {r["identity"] for r in m["matches"] if r["status"] == "match"}
    with GalleryStore(db) as store:  # the file changes: the matched people leave, a nearer stranger arrives
        model = store.model()
        probe = np.load(tmp_path / "r" / m["videos"][0]["tracks"][0]["feature"])
        store.add([Enrolment("Stranger", "x.mp4", [TrackResult(1, 0, 99, 100, 100, {},
                                                               Embedding("x", 1, probe.copy(), 100, 0, 99))])],
                  model)
        for name in taken:
            store.remove(name)
    res = run_main("rematch", str(tmp_path / "r"), "--output", str(tmp_path), "--name", "again")
    assert res.returncode == 0, res.stderr
    again = json.loads((tmp_path / "again/run.json").read_text())
    assert again["matches"] == m["matches"] and again["identities"] == m["identities"]
    # it prints the decision table a run prints: a row per probe person with its decision, then the folder
    out = res.stdout.strip().splitlines()
    assert out[-1] == str(tmp_path / "again")
    for r in again["matches"]:
        assert any(f"P{r['probe_track']}" in line and f"→ {r['identity']}" in line for line in out), res.stdout
    assert f"{len(again['matches'])} matched" in res.stdout
    assert (tmp_path / "again/gallery_features.npz").is_file()  # so it can be rematched in turn


def test_a_live_stream_decides_through_a_large_gallery_files_index(shared, ckpt, tmp_path):
    import shutil
    from dataclasses import replace

    from allinone.cli import build_parser
    from allinone.commands.args import config_from_args
    from allinone.runner.runner import run
    from allinone.config import SearchConfig
    from allinone.io.run_folder import sha256_path
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is missing here (.ci/run installs it)")
    db = tmp_path / "big.sqlite"
    rng = np.random.default_rng(0)
    with GalleryStore(db, create=True) as store:  # 300 people: more tracks than the (lowered) limit
        store.add([Enrolment(f"S{i:03d}", "x.mp4", [TrackResult(1, 0, 99, 100, 100, {}, Embedding(
            "x", 1, rng.normal(size=(256, 16)).astype(np.float32), 100, 0, 99))]) for i in range(300)],
                  ModelInfo(sha256_path(ckpt), str(ckpt), "gaitbase", "euc"))
    with looped_ts_server(shared / "fixtures/videos/demo4.mp4") as url:
        args = build_parser().parse_args(["--gallery-db", str(db), "--probe", url,
                                          "--threshold", "1e9", "--reconnect", "2", "--duration", "12",
                                          "--output", str(tmp_path), "--name", "live", *_models(shared, ckpt)])
        config = config_from_args(args)
        config = replace(config, search=SearchConfig(exact_limit=100, shortlist=3, sample=100),
                         live=replace(config.live, window_min=10, step=10))  # decisions soon, even on a slow machine
        result = run(config)
    m = result.manifest
    assert m["search"]["mode"] == "index" and m["search"]["tracks"] == 300
    assert (tmp_path / "big.sqlite.euc.index.npz").is_file()  # the live decisions went through the index
    assert m["live"]["walk"]["events"] > 0, m["live"]
    assert any(r["status"] == "match" for r in m["matches"])
    assert m["gallery_features"] == "gallery_features.npz" and m["identities"]
