"""evaluate / calibrate: OpenGait's protocol arithmetic on hand-computable cases, the open-set definitions, and the
commands end to end on a small OpenGait-format set built from the real silhouettes in ../shared.

References here are hand derivations (positions on a line, so every distance is |a - b|) or plain loops written
from the definitions in the README, never a second call of the code under test. (That the protocol numbers equal
OpenGait's own evaluator was checked by running OpenGait's evaluation code beside ours; see the closing note.)"""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from allinone.evaluate.openset import identification, searches, verification
from allinone.evaluate.protocols import Data, casia_b, custom, de_diag, evaluate_rank
from allinone.gait.checkpoint import save_gaitbase_checkpoint
from allinone.gait.gaitbase import GaitBase
from tests.helpers import (aligned_fixture_sequences, assert_float32_distances, float32_distance_bound,
                           write_opengait_dataset)
from tests.test_cli import _assert_user_error, run_main


def line(*pos: float) -> np.ndarray:
    """Embeddings [n, 2, 1] at positions on a line: the euc distance of two is |a - b|."""
    f = np.zeros((len(pos), 2, 1), np.float32)
    f[:, 0, 0] = pos
    return f


def data(rows, metric="euc") -> Data:
    """rows: (label, type, view, position)."""
    lab, typ, vie, pos = zip(*rows)
    return Data(line(*pos), np.array(lab), np.array(typ), np.array(vie), metric)


# ---------------------------------------------------------------- closed set, by hand

def test_casia_b_cells_identical_view_excluded_and_rounded():
    # ids a, b; views 000 and 090. Gallery nm-01: a@000=0, b@000=10, a@090=100, b@090=110.
    # Probes nm-05: a@000=9 (nearest in view 000 gallery: b at 1 → wrong; in view 090: a at 91 → right)
    #               b@000=11 (000: b right; 090: a at 89 → wrong)
    #               a@090=104 (000: b at 94 → wrong; 090: a at 4 → right)
    rows = [("a", "nm-01", "000", 0), ("b", "nm-01", "000", 10), ("a", "nm-01", "090", 100),
            ("b", "nm-01", "090", 110), ("a", "nm-05", "000", 9), ("b", "nm-05", "000", 11),
            ("a", "nm-05", "090", 104)]
    res = casia_b(data(rows))
    nm = res.closed_set["NM"]
    # cell (probe 000, gallery 090): a right, b wrong → 50.00; cell (090, 000): a wrong → 0.00.
    # identical-view cells (000,000) = 50 and (090,090) = 100 are excluded: per view 50 and 0, mean 25
    assert nm["rank1_per_view"] == {"000": 50.0, "090": 0.0}
    assert nm["rank1"] == 25.0
    # BG and CL have no probes at all: every cell is empty, listed, NaN
    assert np.isnan(res.closed_set["BG"]["rank1"])
    assert sum(c.startswith("BG") for c in res.empty_cells) == 4


def test_cell_accuracy_is_rounded_per_cell_like_opengait():
    # one probe view with 3 probes, one right: 33.333… → 33.33 in the cell; two gallery views
    rows = [("a", "nm-01", "000", 0), ("b", "nm-01", "000", 50), ("c", "nm-01", "000", 100),
            ("a", "nm-01", "090", 0), ("b", "nm-01", "090", 50), ("c", "nm-01", "090", 100),
            ("a", "nm-05", "090", 1), ("b", "nm-05", "090", 99), ("c", "nm-05", "090", 49)]
    res = casia_b(data(rows))
    assert res.closed_set["NM"]["rank1_per_view"]["090"] == 33.33
    # probe view 000 has no probes: that row is left out of the mean, not counted as 0
    assert res.closed_set["NM"]["rank1_per_view"]["000"] is None and res.closed_set["NM"]["rank1"] == 33.33


def test_ties_go_to_the_first_gallery_sequence():
    # the probe is at 5, exactly between a (0) and b (10): a comes first in dataset order
    rows = [("a", "nm-01", "090", 0), ("b", "nm-01", "090", 10), ("b", "nm-05", "000", 5),
            ("a", "nm-01", "000", 50)]
    res = casia_b(data(rows))
    assert res.closed_set["NM"]["rank1_per_view"]["000"] == 0.0  # took a: wrong


def test_de_diag_by_hand():
    acc = np.array([[90.0, 60.0, 30.0], [20.0, 80.0, 40.0], [10.0, np.nan, 70.0]])
    np.testing.assert_allclose(de_diag(acc), [45.0, 30.0, 10.0])


def test_custom_protocol_running_gait():
    # NRIPS-run style: gallery walks at one speed, probes run; views excluded when identical
    rows = [("a", "walk-1", "front", 0), ("b", "walk-1", "front", 10), ("a", "walk-1", "side", 20),
            ("b", "walk-1", "side", 30), ("a", "run-1", "front", 21), ("b", "run-1", "front", 12),
            ("a", "jog-1", "side", 1)]
    spec = {"gallery": {"types": ["walk-*"]}, "probes": {"RUN": {"types": ["run-*"]}, "JOG": {"types": ["jog-*"]}},
            "exclude_identical_view": True}
    res = custom(data(rows), spec)
    # RUN probes are in view front; only gallery view side counts: a@21 → a@20 right, b@12 → a@20 (8) vs b@30 (18):
    # wrong → 50. JOG probe a@1 in view side → gallery view front: a@0 right → 100
    assert res.closed_set["RUN"]["rank1"] == 50.0 and res.closed_set["JOG"]["rank1"] == 100.0
    pooled = custom(data(rows), {**spec, "per_view": False, "exclude_identical_view": False})
    # one pooled gallery: a@21 → a@20 right; b@12 → b@10 right
    assert pooled.closed_set["RUN"]["rank1"] == 100.0


def test_evaluate_rank_average_precision_by_hand():
    # one probe 'a'; gallery ordered by distance: b, a, c, a → hits at ranks 2 and 4
    dist = np.array([[1.0, 2.0, 3.0, 4.0]])
    cmc, ap, inp = evaluate_rank(dist, np.array(["a"]), np.array(["b", "a", "c", "a"]))
    assert list(cmc[:4]) == [0, 1, 1, 1]
    assert ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)  # precision at each hit, averaged
    assert inp[0] == pytest.approx(2 / 4)  # hits so far / position of the last hit


# ---------------------------------------------------------------- open set, by hand

def test_tar_at_far_grid_edges():
    # 1000 impostor pairs at 1..1000, 4 genuine at 0.5, 1.5, 10.5, 2000
    imp = np.arange(1, 1001, dtype=float)
    gen = np.array([0.5, 1.5, 10.5, 2000.0])
    dist = np.concatenate([gen, imp])[None, :]
    same = np.zeros_like(dist, bool)
    same[0, :4] = True
    v = verification(dist, same)
    # FAR 0.001: k = 1 → t = 1 → genuine <= 1: {0.5} → 0.25; FAR 0.01: k = 10 → t = 10 → 2/4; 0.1: t = 100 → 3/4
    assert v["TAR@FAR"] == {"0.1": 0.75, "0.01": 0.5, "0.001": 0.25}
    assert v["genuine_pairs"] == 4 and v["impostor_pairs"] == 1000
    # 999 impostors: k = floor(0.999) = 0 at FAR 0.001 → no impostor accepted → t just below 1 → 1/4 still
    v = verification(dist[:, :-1], same[:, :-1])
    assert v["threshold@FAR"]["0.001"] < 1.0 and v["TAR@FAR"]["0.001"] == 0.25


def test_eer_by_hand():
    # genuine 1, 2, 3, 4; impostor 3.5, 5, 6, 7. At t = 3: FAR 0/4, FRR 1/4; at t = 3.5: FAR 1/4, FRR 1/4 → equal
    gen, imp = np.array([1.0, 2, 3, 4]), np.array([3.5, 5, 6, 7])
    dist = np.concatenate([gen, imp])[None, :]
    same = np.array([[True] * 4 + [False] * 4])
    v = verification(dist, same)
    assert v["EER"] == pytest.approx(0.25) and v["threshold@EER"] == 3.5


def test_fnir_at_fpir_by_hand():
    # gallery: a at 0, b at 10, c at 20. Probes (mated): a@1, b@14, c@15 (nearest is b at 5: wrong); stranger
    # probes are the same probes with their own identity removed (non-mated searches):
    #   a@1 → b at 9; b@14 → c at 6; c@15 → b at 5
    gal = line(0, 10, 20)
    pr = line(1, 14, 15)
    dist = np.abs(pr[:, 0, 0][:, None] - gal[:, 0, 0][None, :])
    s = searches(dist, np.array(["a", "b", "c"]), np.array(["a", "b", "c"]))
    assert sorted(s["nonmated_nearest"].tolist()) == [5.0, 6.0, 9.0]
    assert s["mated_nearest"].tolist() == [1.0, 4.0, 5.0] and s["mated_correct"].tolist() == [True, True, False]
    o = identification(s)
    # FPIR 0.1 and 0.01: k = floor(0.3) = floor(0.03) = 0 → t just below 5: mated a (1, right) and b (4, right)
    # are found, c is not (wrong nearest) → FNIR 1/3
    assert o["FNIR@FPIR"]["0.1"] == pytest.approx(1 / 3) and o["FNIR@FPIR"]["0.01"] == pytest.approx(1 / 3)
    assert o["mated_searches"] == 3 and o["non_mated_searches"] == 3


# ---------------------------------------------------------------- the commands, end to end

TYPES = ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared):
    """4 made-up ids x 10 CASIA-B types x 2 views, 12-frame cuts of the real aligned silhouettes; plus an empty
    and a corrupt sequence of a fifth id, and one sequence stored already cut to 64x44."""
    seqs = list(aligned_fixture_sequences(shared).values())
    ds = {}
    for i in range(4):
        for j, t in enumerate(TYPES):
            for k, v in enumerate(("000", "090")):
                off = (j * 4 + k) % 40
                ds[(f"{i + 1:03d}", t, v)] = seqs[i + 4 * k][off:off + 12]
    ds[("005", "nm-01", "000")] = np.zeros((0, 64, 64), np.uint8)
    ds[("003", "nm-06", "090")] = ds[("003", "nm-06", "090")][:, :, 10:-10].copy()  # [T, 64, 44]
    root = tmp_path_factory.mktemp("ds") / "casiab"
    part = write_opengait_dataset(root, ds, test_ids=["001", "002", "003", "004", "005", "099"])
    (root / "005" / "nm-02" / "000").mkdir(parents=True)
    (root / "005" / "nm-02" / "000" / "000.pkl").write_bytes(b"not a pickle")
    torch.manual_seed(1)
    ckpt = root.parent / "GaitBase_eval.pt"
    save_gaitbase_checkpoint(GaitBase(class_num=5), ckpt)
    return root, part, ckpt, ds


@pytest.fixture(scope="module")
def evaluation(dataset, tmp_path_factory):
    root, part, ckpt, _ = dataset
    out = tmp_path_factory.mktemp("eval")
    res = run_main("evaluate", "--dataset", str(root), "--partition", str(part), "--protocol", "casia-b",
                   "--gait-model", str(ckpt), "--output", str(out), "--name", "e", "--quiet")
    assert res.returncode == 0, res.stderr
    return out, res


def test_evaluate_writes_metrics_embeddings_and_plots(evaluation, dataset):
    out, res = evaluation
    root, part, ckpt, ds = dataset
    m = json.loads((out / "e/metrics.json").read_text())
    for cond in ("NM", "BG", "CL"):
        assert 0 <= m["closed_set"][cond]["rank1"] <= 100
        assert set(m["verification"][cond]["TAR@FAR"]) == {"0.1", "0.01", "0.001"}
        assert 0 <= m["verification"][cond]["EER"] <= 1
        assert set(m["open_set"][cond]["FNIR@FPIR"]) == {"0.01", "0.1"}
    # the empty and the corrupt pickle are listed and skipped; '099' is not a folder and is ignored as OpenGait does
    skipped = {s["file"]: s["why"] for s in m["dataset"]["skipped"]}
    assert set(skipped) == {"005/nm-01/000/000.pkl", "005/nm-02/000/000.pkl"} and "empty" in skipped[
        "005/nm-01/000/000.pkl"]
    assert m["dataset"]["embedded"] == 80 and m["speed"]["computed"] == 80
    z = np.load(out / "e/embeddings.npz")
    assert z["embeddings"].shape == (80, 256, 16)
    # OpenGait's order: ids as in TEST_SET, types and views sorted
    keys = list(zip(z["labels"], z["types"], z["views"]))
    assert keys == sorted(keys) and keys[0] == ("001", "bg-01", "000")
    for f in ("cmc.png", "roc.png", "distances.png"):
        assert (out / "e" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| NM |" in res.stdout and "NM@R1" in res.stdout


def test_embeddings_are_the_models_on_whole_sequences(evaluation, dataset):
    from allinone.config import GaitConfig
    from allinone.gait.checkpoint import GaitEmbedder
    out, _ = evaluation
    root, _, ckpt, ds = dataset
    z = np.load(out / "e/embeddings.npz")
    emb = GaitEmbedder(GaitConfig(model=str(ckpt)), "cpu")
    row = {k: i for i, k in enumerate(zip(z["labels"], z["types"], z["views"]))}
    for key in (("001", "nm-01", "000"), ("003", "nm-06", "090")):  # the second is stored 64x44
        with open(root.joinpath(*key) / f"{key[2]}.pkl", "rb") as fh:
            seq = pickle.load(fh)
        np.testing.assert_allclose(z["embeddings"][row[key]], emb([seq])[0], rtol=1e-5, atol=1e-6)
    # the pre-cut sequence gives the embedding of its 64-wide original
    with open(root / "003/nm-05/090/090.pkl", "rb") as fh:
        wide = pickle.load(fh)
    np.testing.assert_allclose(emb([wide[:, :, 10:-10].copy()])[0], emb([wide])[0], rtol=1e-6, atol=1e-7)


def test_rerun_reads_the_cache_and_another_protocol_reuses_it(evaluation, dataset, tmp_path):
    out, _ = evaluation
    root, part, ckpt, _ = dataset
    proto = tmp_path / "nm_vs_cl.json"
    proto.write_text(json.dumps({"name": "nm-cl", "gallery": {"types": ["nm-0[1-4]"]},
                                 "probes": {"CL": {"types": ["cl-*"]}}}))
    res = run_main("evaluate", "--dataset", str(root), "--partition", str(part), "--protocol", str(proto),
                   "--gait-model", str(ckpt), "--output", str(out), "--name", "custom", "--quiet")
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "custom/metrics.json").read_text())
    assert m["speed"]["computed"] == 0 and m["speed"]["cached"] == 80
    base = json.loads((out / "e/metrics.json").read_text())
    # the same galleries and probes as casia-b's CL condition: the same rank-1
    assert m["closed_set"]["CL"]["rank1"] == pytest.approx(base["closed_set"]["CL"]["rank1"])


def test_interrupted_embedding_resumes(dataset, tmp_path):
    from allinone.config import GaitConfig
    from allinone.evaluate.dataset import list_sequences, read_partition
    from allinone.evaluate.embed import EmbeddingCache, embed_dataset
    from allinone.gait.checkpoint import GaitEmbedder
    root, part, ckpt, _ = dataset
    seqs = list_sequences(root, read_partition(part))[:20]
    real = GaitEmbedder(GaitConfig(model=str(ckpt)), "cpu")
    calls = []

    def interrupted(batch_seqs, batch=1):  # the real model, with a Ctrl-C after its second call
        calls.append(len(batch_seqs))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(batch_seqs, batch=batch)

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(root, seqs, interrupted, cache, batch=1, quiet=True)
    cache.close()
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    done = embed_dataset(root, seqs, real, cache, batch=1, quiet=True)
    cache.close()
    assert done.cached == calls[0] + calls[1] > 0 and done.computed == 20 - done.cached


def test_a_calibration_made_from_another_segmenters_silhouettes_is_refused_by_name(evaluation, dataset, tmp_path,
                                                                                  shared):
    out, _ = evaluation
    _, _, ckpt, _ = dataset
    cal = tmp_path / "cal.json"
    onnx = shared / "weights/pphumanseg_onnx_model.onnx"
    res = run_main("calibrate", "--evaluation", str(out / "e"), "--target-fpir", "0.1", "--out", str(cal),
                   "--seg-model", str(onnx), "--quiet")
    assert res.returncode == 0, res.stderr
    # the digest published in ../shared/README.md
    seg = json.loads(cal.read_text())["inputs"]["segmenter"]
    assert seg == {"path": str(onnx), "sha256": "20948f5f82a0ef020f8dd5d59a919b792936cbdf0e4beb49ac8b61f56f89fd0f"}
    v = shared / "fixtures/videos"
    res = run_main("--gallery", str(v / "demo1.mp4"), "--probe", str(v / "demo2.mp4"),
                   "--detector", str(shared / "weights/yolox_nano.onnx"),
                   "--seg-model", str(shared / "weights/pphumanseg_v1_lite_192x192_with_softmax"),
                   "--gait-model", str(ckpt), "--output", str(tmp_path / "runs"), "--quiet", "--calibration", str(cal))
    _assert_user_error(res, "cal.json", "calibrated with segmenter model pphumanseg_onnx_model.onnx",
                       "this run uses pphumanseg_v1_lite_192x192_with_softmax")
    assert res.returncode == 2


def test_calibrate_stores_the_impostor_distribution_and_a_run_uses_it(evaluation, dataset, tmp_path, shared):
    out, _ = evaluation
    root, part, ckpt, _ = dataset
    cal = tmp_path / "cal.json"
    res = run_main("calibrate", "--evaluation", str(out / "e"), "--target-fpir", "0.1", "--out", str(cal),
                   "--quiet")
    assert res.returncode == 0, res.stderr
    rec = json.loads(cal.read_text())
    # independent reference: each probe's nearest gallery sequence of another identity, by a plain loop
    z = np.load(out / "e/embeddings.npz")
    feats, lab, typ = z["embeddings"].astype(np.float64), z["labels"], z["types"]
    gal = [i for i, t in enumerate(typ) if t in ("nm-01", "nm-02", "nm-03", "nm-04")]
    non, pairs, bounds = [], [], []
    for i, t in enumerate(typ):
        if t in ("nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"):
            others = [j for j in gal if lab[j] != lab[i]]
            d = [np.mean(np.sqrt(((feats[i] - feats[j]) ** 2).sum(0))) for j in others]
            non.append(min(d))
            pairs += d
            bounds += list(float32_distance_bound(feats[i:i + 1], feats[others])[0])
    pairs = np.sort(pairs)
    tol = max(bounds)  # float32's own error on these pairs (the sorted values move by no more)
    assert len(non) == 48 and rec["searches"]["non_mated"] == 48
    # every impostor pair: 48 probes x 24 gallery sequences of the 3 other ids (4 ids x 4 nm types x 2 views)
    imp = rec["impostor"]
    assert imp["count"] == len(pairs) == 48 * 24
    assert_float32_distances(imp["lowest"], pairs, tol, sort=True)
    assert imp["quantiles"]["d"][0] == pytest.approx(pairs[0], abs=tol)
    assert imp["quantiles"]["d"][-1] == pytest.approx(pairs[-1], abs=tol)
    # counted in people (the sequences of one person are alike): 4 identities give 2 disjoint pairs
    assert imp["independent"] == 2 and imp["independent_unit"] == "people"
    # at the evaluation's own gallery size N = 32, FPIR 0.1 needs a per-pair rate f* = 1 - 0.9^(1/32); 2
    # independent pairs cannot show it, so the threshold is the point estimate's: d_k, k = floor(f* n)
    f_star = 1 - 0.9 ** (1 / 32)
    k = int(np.floor(f_star * len(pairs)))  # 0.00329 x 1152 → 3
    assert rec["gallery_size"] == 32 and rec["supported"] is False and k == 3
    assert rec["threshold"] == pytest.approx(pairs[k - 1], abs=tol)
    assert rec["metric"] == "euc" and rec["arch"] == "gaitbase" and rec["target_fpir"] == 0.1
    assert rec["embedding"] == "embed_1" and rec["version"] == 2
    # a run with this checkpoint takes it (here: a GaitBase of the same file on the shared videos)
    v = shared / "fixtures/videos"
    args = ["--gallery", str(v / "demo1.mp4"), "--probe", str(v / "demo2.mp4"),
            "--detector", str(shared / "weights/yolox_nano.onnx"),
            "--seg-model", str(shared / "weights/pphumanseg_onnx_model.onnx"), "--gait-model", str(ckpt),
            "--output", str(tmp_path / "runs"), "--quiet"]
    res = run_main(*args, "--name", "cal", "--calibration", str(cal))
    assert res.returncode == 0, res.stderr
    t = json.loads((tmp_path / "runs/cal/run.json").read_text())["threshold"]
    # the calibration's 1152 pairs join the run's own impostor evidence; the threshold is chosen for this gallery
    assert t["basis"] == "auto" and t["evidence"]["sources"]["calibration"] == {
        "file": str(cal), "pairs": 1152, "independent": 2, "found": "given"}
    assert t["evidence"]["pairs"] >= 1152 and t["fpir"]["supported"] is False and "cannot show" in t["statement"]
    # refused by name for another checkpoint
    torch.manual_seed(2)
    other = tmp_path / "other.pt"
    save_gaitbase_checkpoint(GaitBase(class_num=5), other)
    res = run_main(*[a if a != str(ckpt) else str(other) for a in args], "--name", "x", "--calibration", str(cal))
    _assert_user_error(res, "cal.json", "another checkpoint")
    # and for another metric
    res = run_main(*args, "--name", "y", "--calibration", str(cal), "--metric", "cos")
    last = res.stderr.strip().splitlines()[-1]  # after the warning that cos is not the model's own metric
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "cal.json" in last and "euc metric, not cos" in last


def test_evaluate_refuses_bad_input(dataset, tmp_path):
    root, part, ckpt, _ = dataset
    base = ["evaluate", "--dataset", str(root), "--partition", str(part), "--gait-model", str(ckpt),
            "--output", str(tmp_path), "--quiet"]
    _assert_user_error(run_main(*base, "--protocol", "casia-x"), "casia-x")
    _assert_user_error(run_main(*[a if a != str(part) else str(tmp_path / "no.json") for a in base],
                                "--protocol", "casia-b"), "no.json")
    empty = tmp_path / "p.json"
    empty.write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": ["zzz"]}))
    _assert_user_error(run_main(*[a if a != str(part) else str(empty) for a in base], "--protocol", "casia-b"),
                       "TEST_SET")
    assert list(tmp_path.glob("eval-*")) == []


def test_calibration_beside_the_checkpoint_is_found_and_a_stale_one_ignored(evaluation, dataset, tmp_path, caplog):
    import logging
    import shutil

    from allinone.decide.calibration import beside, find_calibration
    from allinone.io.run_folder import sha256_path
    out, _ = evaluation
    _, _, ckpt, _ = dataset
    local = tmp_path / "GaitBase_eval.pt"
    shutil.copyfile(ckpt, local)
    assert beside(local) == tmp_path / "GaitBase_eval.calibration.json"
    res = run_main("calibrate", "--evaluation", str(out / "e"), "--out", str(beside(local)), "--quiet")
    assert res.returncode == 0, res.stderr
    sha = sha256_path(local)
    t = find_calibration(None, str(local), sha, "euc")
    assert t is not None and t.source.count == 1152 and t.detail["file"] == str(beside(local))
    with caplog.at_level(logging.WARNING):
        assert find_calibration(None, str(local), "0" * 64, "euc") is None  # the checkpoint changed since
    assert "another checkpoint" in caplog.text and "ignored" in caplog.text
    assert find_calibration(None, str(tmp_path / "none.pt"), sha, "euc") is None
