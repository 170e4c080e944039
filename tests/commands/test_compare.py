"""End to end on real data: evaluate a subset of the shared CASIA-B sequences → calibrate --lr → evaluate
--lr-model → compare two shared videos, with a randomly initialised GaitBase (the machinery, not evidence)."""
from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest

from tests.helpers import float32_distance_bound
from tests.test_cli import _assert_user_error, run_main

IDS = ["001", "002", "003", "004", "005", "006"]
TYPES = ["nm-01", "nm-02", "bg-01", "cl-01"]


@pytest.fixture(scope="module")
def subset(shared, tmp_path_factory):
    """6 identities × 4 sequence types × view 090 of ../shared/fixtures/casiab_dev (links, nothing copied)."""
    root = tmp_path_factory.mktemp("casiab") / "casiab_sub"
    for i in IDS:
        for t in TYPES:
            (root / i / t).mkdir(parents=True)
            (root / i / t / "090").symlink_to(shared / "fixtures/casiab_dev" / i / t / "090")
    part = root.parent / "part.json"
    part.write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": IDS}))
    return root, part


@pytest.fixture(scope="module")
def fitted(subset, random_gaitbase, tmp_path_factory):
    root, part = subset
    out = tmp_path_factory.mktemp("lr")
    res = run_main("evaluate", "--dataset", str(root), "--partition", str(part), "--protocol", "casia-b",
                   "--gait-model", str(random_gaitbase), "--frames-limit", "20", "--output", str(out), "--name", "e",
                   "--quiet")
    assert res.returncode == 0, res.stderr
    for method in ("logistic", "pav"):
        res = run_main("calibrate", "--lr", "--evaluation", str(out / "e"), "--method", method, "--folds", "6",
                       "--output", str(out), "--name", method, "--quiet")
        assert res.returncode == 0, res.stderr
        assert "Cllr" in res.stdout and res.stdout.strip().endswith(f"{method}/lr_model.json")
    return out


def test_evaluate_with_an_lr_model_prints_the_cllr_it_writes(subset, random_gaitbase, fitted, tmp_path):
    root, part = subset
    res = run_main("evaluate", "--dataset", str(root), "--partition", str(part), "--protocol", "casia-b",
                   "--gait-model", str(random_gaitbase), "--frames-limit", "20", "--output", str(tmp_path),
                   "--name", "v", "--quiet", "--lr-model", str(fitted / "pav/lr_model.json"))
    assert res.returncode == 0, res.stderr
    written = json.loads((tmp_path / "v/lr_validation.json").read_text())
    line = next(x for x in res.stdout.splitlines() if "Cllr" in x)
    assert f"Cllr {written['cllr']:.4f}" in line and f"Cllr_min {written['cllr_min']:.4f}" in line


def _strict(path):
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: non-strict JSON {c}"))


def test_calibrate_lr_records_the_fit_and_held_out_validation(fitted, random_gaitbase):
    out = fitted
    for method in ("logistic", "pav"):
        m = _strict(out / method / "lr_model.json")
        assert m["kind"] == "allinone-lr-model" and m["fit"]["method"] == method
        assert m["checkpoint_sha256"] == hashlib.sha256(random_gaitbase.read_bytes()).hexdigest()
        assert m["metric"] == "euc" and m["embedding"] == "embed_1"
        assert m["data"]["embeddings_sha256"] == hashlib.sha256((out / "e/embeddings.npz").read_bytes()).hexdigest()
        # 24 sequences, 4 per identity: 6 × C(4, 2) = 36 mated pairs of C(24, 2) = 276
        assert m["data"]["pairs"] == {"mated": 36, "non_mated": 240} and m["data"]["identities"] == 6
        b = m["fit"]["bounds"]
        assert 0 < float(b["lower_lr"]) <= 1 <= float(b["upper_lr"])
        v = _strict(out / method / "validation.json")
        assert v["cllr_cal"] == pytest.approx(v["cllr"] - v["cllr_min"]) and 0 <= v["cllr_min"] <= v["cllr"] + 1e-9
        assert 0 <= v["eer"] <= 1 and v["cross_validation"]["k"] == 6 and v["cross_validation"]["fits"] == 21
        for f in ("tippett.png", "ece.png"):
            assert (out / method / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_with_an_lr_model_writes_its_figures(fitted, subset, random_gaitbase, tmp_path):
    root, part = subset
    res = run_main("evaluate", "--dataset", str(root), "--partition", str(part), "--protocol", "casia-b",
                   "--gait-model", str(random_gaitbase), "--frames-limit", "20", "--cache",
                   str(fitted / ".embed-cache"), "--output", str(tmp_path), "--name", "e2", "--quiet",
                   "--lr-model", str(fitted / "pav/lr_model.json"))
    assert res.returncode == 0, res.stderr
    s = _strict(tmp_path / "e2/lr_validation.json")
    assert s["pairs"] == {"mated": 36, "non_mated": 240} and 0 <= s["cllr_min"] <= s["cllr"]
    assert s["model"]["held_out"] is False and "6 of these 6 identities" in s["model"]["note"]  # the same people
    assert s["model"]["same_embeddings"] and s["model"]["same_dataset_root"]
    assert (tmp_path / "e2/lr_tippett.png").is_file() and (tmp_path / "e2/lr_ece.png").is_file()
    assert json.loads((tmp_path / "e2/metrics.json").read_text())["lr_validation"]["cllr"] == s["cllr"]


@pytest.fixture(scope="module")
def compared(fitted, shared, random_gaitbase, tmp_path_factory):
    v = shared / "fixtures/videos"
    out = tmp_path_factory.mktemp("cmp")
    res = run_main("compare", str(v / "demo1.mp4"), str(v / "demo2.mp4"), "--lr-model",
                   str(fitted / "logistic/lr_model.json"), "--gait-model", str(random_gaitbase),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_v1_lite_192x192_with_softmax"),
                   "--output", str(out), "--name", "c", "--quiet")
    assert res.returncode == 0, res.stderr
    return out / "c", res


def test_compare_gives_the_models_lr_of_the_two_walkers_distance(compared, fitted, shared):
    folder, res = compared
    rec = json.loads((folder / "compare.json").read_text())
    q, r = rec["questioned"], rec["reference"]
    assert q["video_sha256"] == hashlib.sha256((shared / "fixtures/videos/demo1.mp4").read_bytes()).hexdigest()
    assert r["video_sha256"] == hashlib.sha256((shared / "fixtures/videos/demo2.mp4").read_bytes()).hexdigest()
    # the distance of the two tracks' features as the pipeline wrote them, by a plain loop (OpenGait's euc)
    run = json.loads((folder / "pipeline/run.json").read_text())
    feats = {v["role"]: {t["id"]: t for t in v["tracks"]} for v in run["videos"]}
    fq = np.load(folder / "pipeline" / feats["gallery"][q["track"]]["feature"]).astype(np.float64)
    fr = np.load(folder / "pipeline" / feats["probe"][r["track"]]["feature"]).astype(np.float64)
    d = float(np.mean(np.sqrt(((fq - fr) ** 2).sum(0))))
    tol = float32_distance_bound(fq[None], fr[None])[0, 0]
    assert rec["distance"] == pytest.approx(d, abs=tol)
    # the LR: ln LR = a + b d from the model file, clipped to its bounds
    m = json.loads((fitted / "logistic/lr_model.json").read_text())
    a, b = m["fit"]["parameters"]["a"], m["fit"]["parameters"]["b"]
    lo, hi = float(m["fit"]["bounds"]["lower_lr"]), float(m["fit"]["bounds"]["upper_lr"])
    # ln LR moves by at most |b| tol when d does
    assert rec["lr"] == pytest.approx(min(hi, max(lo, math.exp(a + b * d))), rel=math.expm1(abs(b) * tol) + 1e-12)
    assert rec["lr_verbal"] in res.stdout and "not evidence" in res.stderr
    # the pipeline's own run (a 1:N search) carries no LR: an LR is of the one designated pair
    assert "lr_model" not in run and not any("lr" in x or "lr_verbal" in x for x in run["matches"])
    assert 'data-lr="' not in (folder / "pipeline/report.html").read_text()


def test_compare_report_is_inert_complete_and_prints_to_pdf(compared, fitted, random_gaitbase):
    folder, _ = compared
    rec = json.loads((folder / "compare.json").read_text())
    page = (folder / "compare_report.html").read_text()
    assert "Content-Security-Policy" in page and "<script" not in page
    assert not re.search(r"\son[a-z]+\s*=", page)  # no inline event handlers
    for sha in (rec["questioned"]["video_sha256"], rec["reference"]["video_sha256"],
                hashlib.sha256(random_gaitbase.read_bytes()).hexdigest(),
                hashlib.sha256((fitted / "logistic/lr_model.json").read_bytes()).hexdigest()):
        assert sha in page
    # a random checkpoint whose LR model was validated on 6 people: no validation on record, so the warning stays
    assert "data-warning='unvalidated-checkpoint'" in page and "Not evidence" in page
    assert rec["checkpoint_validated"] is False and "covers 6 people" in rec["checkpoint_validation"]["reason"]
    assert "covers 6 people" in page
    assert page.count("data:image/") >= 5  # two crops, two GEIs, the Tippett plot
    assert "Limitations" in page and "ENFSI" in page and "Cllr_min" in page
    assert (folder / "compare_report.pdf").read_bytes()[:5] == b"%PDF-"


def test_compare_refuses_an_lr_model_of_another_checkpoint(fitted, shared, tmp_path):
    import torch

    from allinone.gait.checkpoint import save_gaitbase_checkpoint
    from allinone.gait.gaitbase import GaitBase
    torch.manual_seed(3)
    other = tmp_path / "other.pt"
    save_gaitbase_checkpoint(GaitBase(class_num=7), other)
    v = shared / "fixtures/videos"
    res = run_main("compare", str(v / "demo1.mp4"), str(v / "demo2.mp4"), "--lr-model",
                   str(fitted / "logistic/lr_model.json"), "--gait-model", str(other),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--output", str(tmp_path))
    _assert_user_error(res, "lr_model.json", "another checkpoint")
    res = run_main("compare", str(tmp_path / "missing.mp4"), str(v / "demo2.mp4"), "--lr-model",
                   str(fitted / "logistic/lr_model.json"), "--output", str(tmp_path))
    _assert_user_error(res, "missing.mp4", "not found")
    assert not any(tmp_path.glob("compare-*"))


def test_compare_refuses_an_lr_model_of_another_embedding(fitted, shared, random_gaitbase, tmp_path):
    # the model says embed_2; the checkpoint (a GaitBase) gives embed_1: refused once the model is loaded, before any
    # video is processed, and no comparison folder is left
    m = json.loads((fitted / "logistic/lr_model.json").read_text())
    m["embedding"] = "embed_2"
    other = tmp_path / "embed2.json"
    other.write_text(json.dumps(m))
    v = shared / "fixtures/videos"
    res = run_main("compare", str(v / "demo1.mp4"), str(v / "demo2.mp4"), "--lr-model", str(other),
                   "--gait-model", str(random_gaitbase), "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"),
                   "--output", str(tmp_path / "out"), "--quiet")
    _assert_user_error(res, "embed2.json", "embed_2, not embed_1")
    assert not any((tmp_path / "out").glob("compare-*/compare.json"))


def test_a_run_refuses_an_lr_model(fitted, tmp_path):
    # a search's nearest of N identities is not a 1:1 comparison: the run says so before reading anything
    res = run_main("--gallery", str(tmp_path / "g.mp4"), "--probe", str(tmp_path / "p.mp4"), "--lr-model",
                   str(fitted / "logistic/lr_model.json"), "--output", str(tmp_path))
    _assert_user_error(res, "--lr-model", "belongs to one designated comparison")


def test_validation_rests_on_the_lr_models_record_of_this_checkpoint(fitted, random_gaitbase):
    from allinone.config import EvidenceConfig
    from allinone.decide.lr_model import checkpoint_validation
    rec = json.loads((fitted / "logistic/lr_model.json").read_text())
    sha = hashlib.sha256(random_gaitbase.read_bytes()).hexdigest()
    v = checkpoint_validation(rec, sha)  # the random checkpoint, validated on 6 people: not validated
    assert v["validated"] is False and v["held_out_identities"] == 6 and v["cllr"] == rec["validation"]["cllr"]
    folds = {f"{i:03d}": i % 10 for i in range(60)}
    good = {**rec, "validation": {**rec["validation"], "cllr": 0.3,
                                  "cross_validation": {**rec["validation"]["cross_validation"], "folds": folds}}}
    assert checkpoint_validation(good, sha)["validated"] is True
    assert checkpoint_validation(good, "0" * 64)["validated"] is False  # another checkpoint's validation
    bad = {**good, "validation": {**good["validation"], "cllr": EvidenceConfig().max_cllr}}
    assert "not below" in checkpoint_validation(bad, sha)["reason"]
    assert "no held-out validation" in checkpoint_validation({**good, "validation": {}}, sha)["reason"]


def test_the_longest_usable_track_is_compared_unless_one_is_named():
    from allinone.commands.compare import pick_track
    from allinone.errors import UserError
    from allinone.records import Embedding, TrackResult, VideoInfo
    from allinone.stages.step import VideoResult
    video = VideoResult(VideoInfo(path="v.mp4", name="v", role="gallery", frames=100, fps=25.0, width=64,
                                  height=64))
    for tid, n in ((1, 12), (2, 40), (3, 5)):
        video.tracks[tid] = TrackResult(tid, 0, 50, 50, n, embedding=Embedding(
            "v", tid, np.zeros((4, 2), np.float32), n))
    video.tracks[4] = TrackResult(4, 0, 9, 10, 0)  # seen, never embedded
    assert pick_track(video, None, 10, "--track") == 2
    assert pick_track(video, 1, 10, "--track") == 1
    for wanted in (3, 4, 9):  # too short, not embedded, absent
        with pytest.raises(UserError, match=f"--track {wanted}: no such track"):
            pick_track(video, wanted, 10, "--track")
    with pytest.raises(UserError, match="no walking person with 50 usable silhouettes"):
        pick_track(video, None, 50, "--track")
