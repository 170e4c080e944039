"""GaitGraph (ResGCN-N39-R8) with its real released weights: the same embedding as GaitGraph's own code, a checkpoint
read without running any of its pickle's code, and the windows and coordinate mapping of gait/skeleton.py."""
from __future__ import annotations

import builtins
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from allinone.config import GaitConfig, SkeletonConfig
from allinone.errors import UserError
from allinone.gait.backends import embedder_for, reads_keypoints
from allinone.gait.checkpoint import load_gait_model
from allinone.gait.gaitgraph import GaitGraph, coco_adjacency
from allinone.io.safe_pickle import read_tensors
from allinone.gait.skeleton import to_model_coordinates, window_starts

REFERENCE = Path(__file__).parent / "data/gaitgraph_reference.npz"


@pytest.fixture(scope="module")
def weights(shared) -> Path:
    return shared / "weights/gaitgraph_resgcn-n39-r8_coco_seq_60.pth"


@pytest.fixture(scope="module")
def embedder(weights):
    return embedder_for(weights, GaitConfig())


def test_equals_gaitgraphs_own_code_on_real_keypoints(embedder):
    """The fixture holds two 60-frame windows of demo1's walker (MoveNet keypoints from a run, already in the model's
    coordinates by KeypointEmbedder.windows) and the embeddings GaitGraph's own code gives them. It was made by
    fetching tteepe/GaitGraph (commit e7a3995) into /tmp, building ``models.create('resgcn-n39-r8',
    A=Graph('coco').A, num_class=128, num_input=1, num_channel=3)``, loading ``torch.load(path)['model']`` (the full
    unpickling its evaluate.py does) and feeding each window through its evaluate transform (MultiInput, ToTensor):
    ``model(x)`` on (2, 1, 3, 60, 17)."""
    ref = np.load(REFERENCE)
    with torch.inference_mode():
        ours = embedder.model.embed(torch.from_numpy(ref["windows"]))[:, :, 0].numpy()
    assert ours.shape == ref["embeddings"].shape == (2, 128)
    assert np.abs(ours - ref["embeddings"]).max() < 1e-5


def test_graph_equals_the_one_stored_in_the_checkpoint(weights):
    """Our COCO adjacency, built from the bone list, equals the A buffer GaitGraph saved with its trained model."""
    state, _ = read_tensors(weights)
    np.testing.assert_allclose(coco_adjacency(), state["A"].numpy(), atol=1e-7)
    np.testing.assert_allclose(coco_adjacency(), state["input_branches.0.A"].numpy(), atol=1e-7)
    # by hand: the nose (0) links itself, both eyes (1, 2); its column in hop 0 is 1/deg over joints within 3 hops
    a = coco_adjacency()
    within = (a[:, :, 0].sum(axis=0) > 0).sum()
    assert a[0, 0, 0] == pytest.approx(1 / within)


def test_batch_of_one_works_and_equals_its_batch_row(embedder):
    ref = np.load(REFERENCE)["windows"]
    with torch.inference_mode():
        both = embedder.model.embed(torch.from_numpy(ref))[:, :, 0]
        one = embedder.model.embed(torch.from_numpy(ref[1:]))[:, :, 0]
    assert torch.allclose(one[0], both[1], atol=1e-6)
    assert torch.allclose(one.norm(dim=1), torch.ones(1), atol=1e-6)


def test_recognised_by_its_keys_with_the_metric_gaitgraph_uses(weights, random_gaitbase, embedder):
    assert reads_keypoints(weights) and not reads_keypoints(random_gaitbase)
    assert (embedder.arch, embedder.metric, embedder.input, embedder.embedding_shape) == \
        ("gaitgraph", "euc", "keypoints", (128, 1))
    model, spec = load_gait_model(weights)
    assert isinstance(model, GaitGraph) and spec.name == "gaitgraph"
    assert GaitGraph.kwargs_from_state(model.state_dict())["structure"] == (1, 2, 2, 2)


def _marker_payload(marker: Path):
    class Payload:
        def __reduce__(self):
            return builtins.open, (str(marker), "w")  # would create the marker file when unpickled
    return Payload()


def test_other_entries_are_never_unpickled(tmp_path):
    """A GaitGraph-shaped checkpoint whose other entries would run code when unpickled loads its model tensors and
    runs nothing; full unpickling of the same file (the control) does run it."""
    marker = tmp_path / "ran"
    torch.manual_seed(0)
    state = GaitGraph().state_dict()
    path = tmp_path / "evil_gaitgraph.pth"
    torch.save({"opt": _marker_payload(marker), "model": state, "optimizer": _marker_payload(marker)}, path)
    model, spec = load_gait_model(path)
    assert not marker.exists()
    assert spec.name == "gaitgraph"
    assert all(torch.equal(model.state_dict()[k].cpu(), v) for k, v in state.items())
    torch.load(path, weights_only=False)  # the control: the same file, fully unpickled
    assert marker.exists()


def test_code_inside_the_model_entry_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    state = dict(GaitGraph().state_dict())
    state["fcn.weight"] = _marker_payload(marker)
    path = tmp_path / "evil_model.pth"
    torch.save({"opt": 1, "model": state}, path)
    with pytest.raises(UserError):
        load_gait_model(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a dict of tensors"):
        read_tensors(path)
    assert not marker.exists()


def test_an_opengait_checkpoint_with_pickled_objects_is_still_refused(tmp_path, random_gaitbase):
    obj = torch.load(random_gaitbase, weights_only=True)
    obj["cfg"] = zipfile.ZipInfo("x")  # any object besides tensors
    path = tmp_path / "risky.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load_gait_model(path)


@pytest.mark.parametrize("n,expected", [(118, [0, 30, 58]), (90, [0, 30]), (60, [0]), (40, [0]), (61, [0, 1])])
def test_window_starts(n, expected):
    assert window_starts(n, 60, 30) == expected


def test_coordinates_forget_where_and_how_big_the_person_is(embedder):
    """A walker moved and scaled in the frame gives the same model input; y's mean and spread become the input
    BatchNorm's running statistics (what GaitGraph's CASIA-B training data had)."""
    rng = np.random.default_rng(0)
    seq = np.concatenate([rng.uniform(100, 300, (60, 17, 2)), rng.uniform(0, 1, (60, 17, 1))], axis=-1)
    moved = seq.copy()
    moved[..., :2] = seq[..., :2] * 3.5 + np.array([700.0, -40.0])
    a = to_model_coordinates(seq, embedder.mean, embedder.std)
    b = to_model_coordinates(moved, embedder.mean, embedder.std)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert a[..., 1].mean() == pytest.approx(embedder.mean[1], abs=1e-3)
    assert a[..., 1].std() == pytest.approx(embedder.std[1], rel=1e-4)
    assert a[..., 0].mean() == pytest.approx(embedder.mean[0], abs=1e-3)
    np.testing.assert_array_equal(a[..., 2], seq[..., 2].astype(np.float32))


def test_track_embedding_is_the_normalised_mean_of_its_windows(embedder):
    rng = np.random.default_rng(1)
    track = np.concatenate([rng.uniform(100, 300, (90, 17, 2)), rng.uniform(0, 1, (90, 17, 1))], -1).astype(np.float32)
    feat = embedder([track])[0]
    assert feat.shape == (128, 1) and feat.dtype == np.float32
    with torch.inference_mode():
        w = [embedder.model.embed(torch.from_numpy(to_model_coordinates(track[s:s + 60], embedder.mean,
                                                                           embedder.std)[None]))[0, :, 0].numpy()
             for s in (0, 30)]
    mean = np.mean(w, axis=0)
    np.testing.assert_allclose(feat[:, 0], mean / np.linalg.norm(mean), atol=1e-5)
    short = embedder([track[:25]])[0]  # shorter than a window: one window of its own length
    assert short.shape == (128, 1) and abs(np.linalg.norm(short) - 1) < 1e-5
    assert SkeletonConfig().window == 60


def test_evaluate_and_calibrate_read_opengait_pose_pickles(tmp_path, embedder, weights):
    """A keypoint model evaluates on an OpenGait-layout pose dataset (float [T, 17, 3] pickles, as OpenGait's pose
    data): its stored embeddings are the model's on each whole sequence, and calibrate takes that evaluation."""
    import json

    from tests.helpers import write_opengait_dataset
    from tests.test_cli import run_main

    base = np.load(REFERENCE)["windows"][0]  # a real walk (model coordinates are pixels of a 320x240 frame)
    rng = np.random.default_rng(0)
    types = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")
    ds = {}
    for i in range(3):
        for t in types:
            seq = base * np.array([1 + 0.1 * i, 1 - 0.05 * i, 1], np.float32)
            seq = seq + rng.normal(0, 1.5, seq.shape).astype(np.float32) * np.array([1, 1, 0], np.float32)
            ds[(f"{i + 1:03d}", t, "090")] = seq[: 40 + 5 * i].astype(np.float32)
    root = tmp_path / "pose_ds"
    part = write_opengait_dataset(root, ds)
    res = run_main("evaluate", "--dataset", str(root), "--partition", str(part), "--protocol", "casia-b",
                   "--gait-model", str(weights), "--output", str(tmp_path / "ev"), "--name", "e", "--quiet")
    assert res.returncode == 0, res.stderr
    z = np.load(tmp_path / "ev/e/embeddings.npz")
    assert z["embeddings"].shape == (30, 128, 1)
    first = [k for k in sorted(ds)][0]
    i = [j for j, (lab, typ) in enumerate(zip(z["labels"], z["types"])) if (lab, typ) == first[:2]][0]
    np.testing.assert_allclose(z["embeddings"][i], embedder([ds[first]])[0], atol=1e-5)
    cal = tmp_path / "cal.json"
    res = run_main("calibrate", "--evaluation", str(tmp_path / "ev/e"), "--target-fpir", "0.1", "--out", str(cal),
                   "--quiet")
    assert res.returncode == 0, res.stderr
    rec = json.loads(cal.read_text())
    assert rec["arch"] == "gaitgraph" and rec["metric"] == "euc" and rec["impostor"]["count"] > 0
