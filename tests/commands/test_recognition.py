"""The whole job as a user runs it: detect, track, segment (Paddle and ONNX PP-HumanSeg), align, GaitBase, match.

No real GaitBase checkpoint exists here: a randomly initialised one is saved in OpenGait's format. Its distances are
meaningless for identity, so identity tests use thresholds that force each rule (0 → unknown, huge → match)."""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from allinone.stages.align import align_silhouette
from allinone.config import GaitConfig
from allinone.gait.checkpoint import GaitEmbedder
from allinone.gait.onnx import PARITY_ATOL, PARITY_RTOL
from allinone.commands.export_onnx import export_command
from allinone.io.video import read_frame_count
from tests.helpers import write_video
from tests.test_cli import _assert_user_error, run_main


@pytest.fixture(scope="module")
def ckpt(random_gaitbase) -> Path:
    return random_gaitbase


def _run(shared, out: Path, ckpt: Path, seg: str = "paddle", probes=("demo2.mp4",), extra=()):
    seg_model = {"paddle": shared / "weights/pphumanseg_v1_lite_192x192_with_softmax",
                 "onnx": shared / "weights/pphumanseg_onnx_model.onnx"}[seg]
    args = ["--gallery", str(shared / "fixtures/videos/demo1.mp4")]
    for p in probes:
        args += ["--probe", str(p if Path(str(p)).is_absolute() else shared / "fixtures/videos" / p)]
    args += ["--detector", str(shared / "weights/yolox_nano.onnx"), "--seg-model", str(seg_model),
             "--gait-model", str(ckpt), "--output", str(out), "--name", "r", "--quiet", *extra]
    return run_main(*args)


@pytest.fixture(scope="module")
def paddle_run(tmp_path_factory, shared, ckpt):
    out = tmp_path_factory.mktemp("paddle")
    res = _run(shared, out, ckpt, "paddle", extra=["--threshold", "1e9", "--save-silhouettes", "png"])
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # --quiet and nothing went wrong: no stray warnings
    return out / "r"


def test_silhouettes_pickle_is_the_alignment_of_the_pngs(paddle_run):
    m = json.loads((paddle_run / "run.json").read_text())
    n_tracks = 0
    for v in m["videos"]:
        for t in v["tracks"]:
            n_tracks += 1
            pngs = sorted((paddle_run / t["silhouettes_png_dir"]).glob("*.png"))
            # every frame of the track is segmented by default, except those the quality filter left out
            filtered = sum(n for k, n in t["dropped"].items() if k != "empty_mask")
            assert len(pngs) == t["n_frames"] - filtered
            assert t["n_silhouettes"] + sum(t["dropped"].values()) == t["n_frames"]
            frames = [int(p.stem) for p in pngs]
            assert frames == sorted(frames) and frames[0] >= t["first_frame"]
            masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in pngs]
            assert all(mk.shape == (192, 192) and set(np.unique(mk)) <= {0, 255} for mk in masks)
            expected = [a for a in (align_silhouette(mk) for mk in masks) if a is not None]
            with open(paddle_run / t["silhouettes_pkl"], "rb") as fh:
                seq = pickle.load(fh)
            assert seq.dtype == np.uint8 and seq.shape == (len(expected), 64, 64)
            np.testing.assert_array_equal(seq, np.stack(expected))
            assert t["n_silhouettes"] == len(expected) >= 10
    assert n_tracks >= 2


def test_features_are_the_embeddings_of_the_pickles(paddle_run, ckpt):
    m = json.loads((paddle_run / "run.json").read_text())
    embedder = GaitEmbedder(GaitConfig(model=str(ckpt)), "cpu")
    assert m["weights"]["gait"]["path"] == str(ckpt)
    assert (m["weights"]["gait"]["arch"], m["settings"]["match"]["metric"]) == ("gaitbase", "euc")
    assert m["settings"]["gait"]["arch"] == "auto"
    for v in m["videos"]:
        for t in v["tracks"]:
            feat = np.load(paddle_run / t["feature"])
            assert feat.dtype == np.float32 and feat.shape == (256, 16)
            with open(paddle_run / t["silhouettes_pkl"], "rb") as fh:
                seq = pickle.load(fh)
            np.testing.assert_allclose(feat, embedder([seq])[0], rtol=1e-4, atol=1e-5)


def test_matches_json_csv_and_result_video(paddle_run, shared):
    m = json.loads((paddle_run / "run.json").read_text())
    probe_tracks = {(v["name"], t["id"]) for v in m["videos"] if v["role"] == "probe" for t in v["tracks"]}
    assert {(r["probe_video"], r["probe_track"]) for r in m["matches"]} == probe_tracks
    gallery_ids = {t["id"] for t in m["videos"][0]["tracks"]}
    assert [i["name"] for i in m["identities"]] == [f"G{t}" for t in sorted(gallery_ids)]
    t = m["threshold"]
    assert (t["value"], t["basis"]) == (1e9, "user")
    # one gallery identity and nobody seen together with anyone: no impostor evidence, so the given threshold's
    # FPIR is stated as unknown rather than guessed
    assert len(m["identities"]) == 1 and t["gallery_size"] == 1
    assert t["evidence"]["pairs"] == 0 and t["fpir"] is None and "FPIR is unknown" in t["statement"]
    for r in m["matches"]:
        assert r["status"] == "match" and r["reason"] is None  # threshold 1e9: everyone within it
        assert r["identity"] in {f"G{t}" for t in gallery_ids}
        dists = [x["distance"] for x in r["ranking"]]
        assert dists == sorted(dists) and r["distance"] == pytest.approx(dists[0])
        span = next(t for t in m["videos"][1]["tracks"] if t["id"] == r["probe_track"])
        assert (r["first_frame"], r["last_frame"]) == (span["first_frame"], span["last_frame"])
    with open(paddle_run / m["matches_file"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["probe_video"], int(r["probe_track"]), r["status"], r["identity"], r["reason"]) for r in rows] == \
        [(r["probe_video"], r["probe_track"], r["status"], r["identity"] or "", r["reason"] or "")
         for r in m["matches"]]
    probe = m["videos"][1]
    assert probe["result_video"] == "G-demo1_P-demo2.mp4"
    assert read_frame_count(paddle_run / probe["result_video"]) == read_frame_count(
        shared / "fixtures/videos/demo2.mp4")
    assert m["weights"]["segmenter"]["sha256"] and m["weights"]["gait"]["sha256"]


@pytest.fixture(scope="module")
def onnx_gait(tmp_path_factory, ckpt) -> Path:
    out = tmp_path_factory.mktemp("onnx_gait") / "gaitbase.onnx"
    assert export_command(["--gait-model", str(ckpt), "--out", str(out)]) == 0
    return out


def test_onnx_segmenter_and_onnx_gait_run_writes_everything(tmp_path, shared, ckpt, onnx_gait):
    res = _run(shared, tmp_path, onnx_gait, "onnx", extra=["--threshold", "0"])
    assert res.returncode == 0, res.stderr
    run = tmp_path / "r"
    m = json.loads((run / "run.json").read_text())
    # the ONNX Runtime gait backend was used, and its features are torch's within the export's parity bound
    assert m["weights"]["gait"]["path"] == str(onnx_gait)
    assert (m["weights"]["gait"]["arch"], m["weights"]["gait"]["metric"]) == ("gaitbase", "euc")
    assert m["settings"]["match"]["metric"] == "euc"  # 'auto' resolved from the model and recorded
    torch_embedder = GaitEmbedder(GaitConfig(model=str(ckpt)), "cpu")
    n_feats = 0
    for v in m["videos"]:
        for t in v["tracks"]:
            assert (run / t["silhouettes_pkl"]).is_file() and (run / t["feature"]).is_file()
            with open(run / t["silhouettes_pkl"], "rb") as fh:
                want = torch_embedder([pickle.load(fh)])[0]
            got = np.load(run / t["feature"])
            assert np.abs(got - want).max() <= PARITY_RTOL * np.abs(want).max() + PARITY_ATOL
            n_feats += 1
    assert n_feats >= 2
    # threshold 0: every distance is larger, so every usable probe track is unknown
    assert m["matches"] and all((r["status"], r["identity"], r["reason"]) == ("unknown", None, "no_candidate")
                                for r in m["matches"])
    assert all(r["ranking"] for r in m["matches"])


def test_too_short_and_probe_without_people(tmp_path, shared, ckpt):
    empty = write_video(tmp_path / "nobody.mp4", 10, size_wh=(320, 240))
    res = _run(shared, tmp_path, ckpt, "onnx", probes=("demo2.mp4", empty),
               extra=["--min-frames", "100000", "--frame-step", "4", "--save-silhouettes", "png"])
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "r/run.json").read_text())
    assert [v["name"] for v in m["videos"]] == ["demo1", "demo2", "nobody"]
    assert m["videos"][2]["tracks"] == []
    assert all(r["probe_video"] != "nobody" for r in m["matches"])
    demo2 = [r for r in m["matches"] if r["probe_video"] == "demo2"]
    assert demo2 and all(r["status"] == "too_short" and r["reason"] == "too_few_silhouettes"
                         and r["distance"] is None and r["ranking"] == [] for r in demo2)
    # frame step 4: a quarter of the track's frames were segmented, less those the quality filter left out
    t = m["videos"][1]["tracks"][0]
    rows = (tmp_path / "r" / m["videos"][1]["tracks_file"]).read_text().splitlines()
    frames = [int(r.split(",")[0]) for r in rows if int(r.split(",")[1]) == t["id"]]
    expected = [f for f in frames if (f - t["first_frame"]) % 4 == 0]
    pngs = sorted((tmp_path / "r" / t["silhouettes_png_dir"]).glob("*.png"))
    assert set(int(p.stem) for p in pngs) <= set(expected)
    assert len(pngs) + t["dropped"]["border"] + t["dropped"]["occluded"] + t["dropped"]["low_score"] == len(expected)
    assert (tmp_path / "r" / "G-demo1_P-nobody.mp4").is_file()


def _no_run(out: Path) -> bool:
    return not out.exists() or list(out.iterdir()) == []


def test_checkpoint_that_is_not_gaitbase(tmp_path, shared):
    bad = tmp_path / "not_gaitbase.pt"
    torch.save({"model": torch.nn.Linear(3, 4).state_dict()}, bad)
    res = _run(shared, tmp_path / "out", bad)
    _assert_user_error(res, "not_gaitbase.pt")
    assert _no_run(tmp_path / "out")


def test_gait_arch_that_does_not_fit_the_checkpoint(tmp_path, shared, ckpt):
    res = _run(shared, tmp_path / "out", ckpt, extra=["--gait-arch", "gaitset"])
    _assert_user_error(res, ckpt.name, "GaitBase", "gaitset")
    assert _no_run(tmp_path / "out")


def test_checkpoint_with_pickled_objects_needs_trust(tmp_path, shared, ckpt):
    import argparse
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    risky = tmp_path / "with_cfg.pt"
    torch.save({**raw, "cfgs": argparse.Namespace(lr=0.1)}, risky)  # an object torch's safe loader refuses
    res = _run(shared, tmp_path / "out", risky)
    _assert_user_error(res, "with_cfg.pt", "--trust-checkpoint")
    assert _no_run(tmp_path / "out")
    # opted in: the same file loads (in full) and gives the same model
    trusted = GaitEmbedder(GaitConfig(model=str(risky), trust_checkpoint=True), "cpu")
    plain = GaitEmbedder(GaitConfig(model=str(ckpt)), "cpu")
    seq = (np.random.default_rng(0).random((6, 64, 64)) > 0.5).astype(np.uint8) * 255
    np.testing.assert_array_equal(trusted([seq])[0], plain([seq])[0])


def test_truncated_checkpoint(tmp_path, shared, ckpt):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    res = _run(shared, tmp_path / "out", bad)
    _assert_user_error(res, "cut.pt")
    assert _no_run(tmp_path / "out")
    # the reason quoted from torch ends on a whole word (or "…" after one), never mid-word
    inside = res.stderr.strip().rsplit("; ", 1)[-1].rstrip(")")
    assert inside.endswith("…") or inside == inside.rstrip(), inside
    if inside.endswith("…"):
        assert inside[-2] != " " and " " in inside


def test_segmentation_folder_without_deploy_yaml(tmp_path, shared, ckpt):
    folder = tmp_path / "seg_model"
    folder.mkdir()
    for f in ("model.pdmodel", "model.pdiparams"):
        (folder / f).write_bytes((shared / "weights/pphumanseg_v1_lite_192x192_with_softmax" / f).read_bytes())
    res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"),
                   "--probe", str(shared / "fixtures/videos/demo2.mp4"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"), "--seg-model", str(folder),
                   "--gait-model", str(ckpt), "--output", str(tmp_path / "out"), "--quiet")
    _assert_user_error(res, "seg_model", "deploy.yaml")
    assert _no_run(tmp_path / "out")


def test_segmentation_onnx_with_unexpected_inputs(tmp_path, shared, ckpt):
    res = run_main("--gallery", str(shared / "fixtures/videos/demo1.mp4"),
                   "--probe", str(shared / "fixtures/videos/demo2.mp4"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/yolox_nano.onnx"),
                   "--gait-model", str(ckpt), "--output", str(tmp_path / "out"), "--quiet")
    _assert_user_error(res, "yolox_nano.onnx")
    assert _no_run(tmp_path / "out")


# ---------------------------------------------------------------- rematch

def test_rematch_at_the_same_threshold_reproduces_the_decisions(paddle_run, tmp_path):
    before = (paddle_run / "run.json").read_bytes()
    res = run_main("rematch", str(paddle_run), "--output", str(tmp_path), "--name", "same", "--quiet")
    assert res.returncode == 0, res.stderr
    new = json.loads((tmp_path / "same/run.json").read_text())
    old = json.loads(before)
    assert new["matches"] == old["matches"] and new["identities"] == old["identities"]
    assert new["threshold"] == old["threshold"] and new["source_run"] == str(paddle_run.resolve())
    assert (tmp_path / "same/matches.csv").read_bytes() == (paddle_run / "matches.csv").read_bytes()
    assert read_frame_count(tmp_path / "same" / new["videos"][1]["result_video"]) == old["videos"][1]["frames"]
    assert (paddle_run / "run.json").read_bytes() == before  # the original is left as it was


def test_rematch_with_another_threshold_and_names(paddle_run, tmp_path):
    m = json.loads((paddle_run / "run.json").read_text())
    res = run_main("rematch", str(paddle_run), "--threshold", "0", "--output", str(tmp_path), "--name", "zero",
                   "--quiet")
    assert res.returncode == 0, res.stderr
    z = json.loads((tmp_path / "zero/run.json").read_text())
    assert (z["threshold"]["value"], z["threshold"]["basis"]) == (0.0, "user")
    assert all((r["status"], r["reason"]) == ("unknown", "no_candidate") for r in z["matches"])
    # distances are the stored features' own: the same numbers as the original run
    assert [r["ranking"] for r in z["matches"]] == [r["ranking"] for r in m["matches"]]
    gid = m["videos"][0]["tracks"][0]["id"]
    res = run_main("rematch", str(tmp_path / "zero"), "--threshold", "1e9", "--identity", f"Ann={gid}",
                   "--output", str(tmp_path), "--name", "ann", "--quiet")
    assert res.returncode == 0, res.stderr
    a = json.loads((tmp_path / "ann/run.json").read_text())
    assert a["identities"][0]["name"] == "Ann" and a["identities"][0]["tracks"][0]["track"] == gid
    assert {r["identity"] for r in a["matches"]} <= {i["name"] for i in a["identities"]}
    # auto with no impostor evidence (one gallery identity, nobody seen together): no threshold, nobody matched,
    # and run.json and the report say why
    res = run_main("rematch", str(paddle_run), "--threshold", "auto", "--output", str(tmp_path), "--name", "auto")
    assert res.returncode == 0, res.stderr
    assert "no_threshold_evidence" in res.stderr  # the console's warning
    au = json.loads((tmp_path / "auto/run.json").read_text())
    assert (au["threshold"]["basis"], au["threshold"]["value"], au["threshold"]["fpir"]) == ("none", None, None)
    assert {(r["status"], r["reason"]) for r in au["matches"]} <= {("unknown", "no_threshold_evidence"),
                                                                   ("too_short", "too_few_silhouettes")}
    assert any(r["reason"] == "no_threshold_evidence" for r in au["matches"])
    assert "no threshold: no impostor evidence" in (tmp_path / "auto/report.html").read_text()
    res = run_main("rematch", str(paddle_run), "--identity", "Ann=999", "--output", str(tmp_path), "--quiet")
    _assert_user_error(res, "999")
    res = run_main("rematch", str(tmp_path / "nope"), "--quiet")
    _assert_user_error(res, "nope")
    # a calibration made for this run's checkpoint and metric
    from allinone.decide.calibration import write_calibration
    cal = write_calibration(tmp_path / "c.json", {"checkpoint": m["weights"]["gait"]["path"],
                                                  "checkpoint_sha256": m["weights"]["gait"]["sha256"],
                                                  "metric": "euc", "threshold": 0.5, "target_fpir": 0.01})
    res = run_main("rematch", str(paddle_run), "--calibration", str(cal), "--output", str(tmp_path), "--name", "c",
                   "--quiet")
    assert res.returncode == 0, res.stderr
    t = json.loads((tmp_path / "c/run.json").read_text())["threshold"]
    # an old calibration file (a threshold only): its number, its FPIR for this gallery unknown to it
    assert (t["value"], t["basis"], t["file"]) == (0.5, "calibrated", str(cal))
    assert "old calibration file" in t["statement"]


# ---------------------------------------------------------------- frame rate and friendly failures

def test_60fps_video_is_segmented_at_30(tmp_path, shared, ckpt):
    src = cv2.VideoCapture(str(shared / "fixtures/videos/demo2.mp4"))
    frames = []
    while True:
        ok, f = src.read()
        if not ok:
            break
        frames.append(f)
    fast = tmp_path / "demo2_60fps.mp4"
    vw = cv2.VideoWriter(str(fast), cv2.VideoWriter_fourcc(*"mp4v"), 60.0, frames[0].shape[1::-1])
    for f in frames:
        vw.write(f)
    vw.release()
    res = _run(shared, tmp_path, ckpt, "onnx", probes=(fast,), extra=["--threshold", "1e9"])
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "r/run.json").read_text())
    v = m["videos"][1]
    assert v["fps"] == pytest.approx(60.0) and v["silhouette_fps"] == pytest.approx(30.0)
    assert m["videos"][0]["silhouette_fps"] == pytest.approx(m["videos"][0]["fps"], abs=1e-3)  # ~30 fps: every frame
    for t in v["tracks"]:
        rows = (tmp_path / "r" / v["tracks_file"]).read_text().splitlines()
        frames_of = [int(r.split(",")[0]) for r in rows if int(r.split(",")[1]) == t["id"]]
        on_grid = [f for f in frames_of if (f - t["first_frame"]) % 2 == 0]
        assert t["n_silhouettes"] + sum(t["dropped"].values()) == len(on_grid)


def test_mistakes_are_refused_before_any_model_loads(tmp_path, shared, ckpt):
    # a directory as the gait model
    res = _run(shared, tmp_path / "out", tmp_path)
    _assert_user_error(res, str(tmp_path), "directory")
    # an existing --name with a broken gait model: the name is what is refused (checked first)
    (tmp_path / "out2" / "r").mkdir(parents=True)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    res = _run(shared, tmp_path / "out2", broken)
    _assert_user_error(res, "exists already")
    # a cos threshold out of range, an infinite or negative one
    for extra in (["--metric", "cos", "--threshold", "15"], ["--threshold", "nan"], ["--threshold", "-1"]):
        res = _run(shared, tmp_path / "out3", broken, extra=extra)
        assert res.returncode == 2 and "Traceback" not in res.stderr and "threshold" in res.stderr, res.stderr
        assert not (tmp_path / "out3" / "r").exists()


def test_repeated_input_and_a_gallery_without_people_are_warned(tmp_path, shared, ckpt):
    empty = write_video(tmp_path / "nobody.mp4", 10, size_wh=(320, 240))
    demo2 = shared / "fixtures/videos/demo2.mp4"
    args = ["--gallery", str(empty), "--probe", str(demo2), "--probe", str(demo2),
            "--detector", str(shared / "weights/yolox_nano.onnx"),
            "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--gait-model", str(ckpt),
            "--output", str(tmp_path / "out"), "--name", "r", "--quiet"]
    res = run_main(*args)
    assert res.returncode == 0, res.stderr
    assert "demo2.mp4 is given 2 times" in res.stderr
    assert "nobody.mp4: the gallery has no usable identity (nobody was found)" in res.stderr
    m = json.loads((tmp_path / "out/r/run.json").read_text())
    assert m["identities"] == [] and m["matches"]
    assert all((r["status"], r["reason"]) in {("unknown", "no_gallery"), ("too_short", "too_few_silhouettes")}
               for r in m["matches"])
