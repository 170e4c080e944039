from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from allinone.stages.align import align_sequence
from allinone.gait.inputs import to_model_input
from allinone.config import GaitConfig
from allinone.errors import UserError
from allinone.gait import GaitBase, GaitEmbedder, load_gait_model, load_gaitbase, save_gaitbase_checkpoint
from tests.helpers import randomize_batchnorm

CLASS_NUM = 7
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def opengait_keys(class_num: int) -> dict[str, tuple[int, ...]]:
    """OpenGait GaitBase (Baseline + ResNet9, configs/gaitbase) state_dict keys and shapes, written out by hand."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for b in BN:
            keys[f"{prefix}.{b}"] = () if b == "num_batches_tracked" else (c,)

    r = "Backbone.forward_block"
    keys[f"{r}.conv1.conv.weight"] = (64, 1, 3, 3)
    bn(f"{r}.bn1", 64)
    c_in = 64
    for i, c in zip((1, 2, 3, 4), (64, 128, 256, 512)):
        blk = f"{r}.layer{i}.0"
        keys[f"{blk}.conv1.weight"] = (c, c_in, 3, 3)
        bn(f"{blk}.bn1", c)
        keys[f"{blk}.conv2.weight"] = (c, c, 3, 3)
        bn(f"{blk}.bn2", c)
        if i > 1:  # layer1 keeps 64 channels at stride 1: no shortcut conv
            keys[f"{blk}.downsample.0.weight"] = (c, c_in, 1, 1)
            bn(f"{blk}.downsample.1", c)
        c_in = c
    keys["FCs.fc_bin"] = (16, 512, 256)
    keys["BNNecks.fc_bin"] = (16, 256, class_num)
    bn("BNNecks.bn1d", 256 * 16)
    return keys


def randomized(seed: int = 0, class_num: int = CLASS_NUM) -> GaitBase:
    """A GaitBase with random weights and non-trivial BatchNorm affine parameters and running statistics."""
    torch.manual_seed(seed)
    return randomize_batchnorm(GaitBase(class_num=class_num))


@pytest.fixture(scope="module")
def model() -> GaitBase:
    return randomized()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    return save_gaitbase_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "GaitBase-00042.pt", iteration=42)


@pytest.fixture(scope="module")
def real_sils(shared) -> np.ndarray:
    files = sorted((shared / "fixtures" / "silhouettes" / "plaza_gallery" / "002").glob("*.png"))
    aligned, _ = align_sequence(np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]))
    return aligned


def functional_embed(sd: dict[str, torch.Tensor], sils: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GaitBase inference in plain functional ops from the state_dict. sils [n, s, h, w] → (embed, logits)."""
    def bn(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)

    n, s, h, w = sils.shape
    r = "Backbone.forward_block"
    x = sils.reshape(n * s, 1, h, w)
    x = F.relu(bn(F.conv2d(x, sd[f"{r}.conv1.conv.weight"], padding=1), f"{r}.bn1"))
    for i, stride in zip((1, 2, 3, 4), (1, 2, 2, 1)):
        b = f"{r}.layer{i}.0"
        y = F.relu(bn(F.conv2d(x, sd[f"{b}.conv1.weight"], stride=stride, padding=1), f"{b}.bn1"))
        y = bn(F.conv2d(y, sd[f"{b}.conv2.weight"], padding=1), f"{b}.bn2")
        if f"{b}.downsample.0.weight" in sd:
            x = bn(F.conv2d(x, sd[f"{b}.downsample.0.weight"], stride=stride), f"{b}.downsample.1")
        x = F.relu(y + x)
    c, fh, fw = x.shape[1:]
    x = x.reshape(n, s, c, fh, fw).max(dim=1).values  # temporal max: [n, c, fh, fw]
    bins = x.reshape(n, c, 16, -1)
    hpp = bins.mean(-1) + bins.max(-1).values  # [n, c, 16]
    embed = torch.stack([hpp[:, :, k] @ sd["FCs.fc_bin"][k] for k in range(16)], dim=-1)  # [n, 256, 16]
    flat = bn(embed.reshape(n, -1), "BNNecks.bn1d").reshape(n, 256, 16)
    logits = torch.stack([F.normalize(flat[:, :, k], dim=1) @ F.normalize(sd["BNNecks.fc_bin"][k], dim=0)
                          for k in range(16)], dim=-1)  # [n, class_num, 16]
    return embed, logits


def test_state_dict_keys_are_opengaits(model):
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == opengait_keys(CLASS_NUM)


def test_embed_equals_functional_reference(model):
    torch.manual_seed(1)
    sils = (torch.rand(2, 3, 64, 44) > 0.5).float()
    with torch.inference_mode():
        want_embed, want_logits = functional_embed(model.state_dict(), sils)
        got = model.embed(sils)
        out = model(sils)
        out5 = model(sils.unsqueeze(1))  # [n, 1, s, h, w]
    assert got.shape == (2, 256, 16) and out["logits"].shape == (2, CLASS_NUM, 16)
    torch.testing.assert_close(got, want_embed, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["embed"], want_embed, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["logits"], want_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out5["embed"], out["embed"])
    # the two sequences differ, so do their embeddings
    assert not torch.allclose(got[0], got[1])


def test_frame_chunking_is_exact(model):
    torch.manual_seed(2)
    sils = (torch.rand(1, 9, 64, 44) > 0.5).float()
    with torch.inference_mode():
        whole = model(sils)["embed"]
        old = model.frame_chunk
        model.frame_chunk = 4
        try:
            chunked = model.embed(sils)
        finally:
            model.frame_chunk = old
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_bad_input_shape(model):
    with pytest.raises(ValueError):
        model.embed(torch.zeros(2, 3, 64))


def test_checkpoint_round_trip(model, ckpt, real_sils):
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(raw) == {"model", "optimizer", "scheduler", "iteration"} and raw["iteration"] == 42
    assert set(raw["model"]) == set(opengait_keys(CLASS_NUM))
    loaded = load_gaitbase(ckpt, "cpu")
    assert not loaded.training
    assert loaded.BNNecks.fc_bin.shape == (16, 256, CLASS_NUM)
    x = torch.from_numpy(to_model_input(real_sils[:12])).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.embed(x), model.embed(x), rtol=0, atol=0)


def test_bare_state_dict_with_module_prefix(model, tmp_path):
    path = tmp_path / "bare.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = load_gaitbase(path)
    torch.testing.assert_close(loaded.FCs.fc_bin, model.FCs.fc_bin, rtol=0, atol=0)


def test_class_num_from_checkpoint(tmp_path):
    path = save_gaitbase_checkpoint(randomized(3, class_num=11), tmp_path / "c11.pt")
    assert load_gaitbase(path).BNNecks.fc_bin.shape[-1] == 11


def _expect_refusal(path: Path, *words: str) -> None:
    with pytest.raises(UserError) as err:
        load_gaitbase(path)
    msg = str(err.value)
    assert path.name in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_refusals(ckpt, tmp_path):
    _expect_refusal(tmp_path / "nothing_here.pt", "not found")
    (tmp_path / "a_folder.pt").mkdir()
    _expect_refusal(tmp_path / "a_folder.pt", "is a directory")

    data = ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _expect_refusal(tmp_path / "cut.pt", "truncated")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    _expect_refusal(tmp_path / "noise.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    _expect_refusal(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello world\n")
    _expect_refusal(tmp_path / "text.pt")

    good = torch.load(ckpt, map_location="cpu", weights_only=True)
    torch.save({"state": good["model"], "iteration": 1}, tmp_path / "nomodel.pt")
    _expect_refusal(tmp_path / "nomodel.pt", "'model'")

    sd = dict(good["model"])
    del sd["Backbone.forward_block.layer3.0.conv2.weight"]
    torch.save({"model": sd}, tmp_path / "missing.pt")
    _expect_refusal(tmp_path / "missing.pt", "missing", "layer3.0.conv2.weight")

    sd = dict(good["model"])
    sd["Backbone.forward_block.layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "extra.pt")
    _expect_refusal(tmp_path / "extra.pt", "unexpected", "layer5.0.conv1.weight")

    sd = dict(good["model"])
    sd["FCs.fc_bin"] = torch.zeros(16, 512, 128)
    torch.save({"model": sd}, tmp_path / "shape.pt")
    _expect_refusal(tmp_path / "shape.pt", "shape", "FCs.fc_bin")

    torch.save({"model": {"BNNecks.fc_bin": torch.zeros(16, 256, 3)}}, tmp_path / "other.pt")
    _expect_refusal(tmp_path / "other.pt", "missing")


def test_pickled_objects_are_refused_unless_trusted(ckpt, tmp_path):
    import argparse
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    risky = tmp_path / "risky.pt"
    torch.save({**raw, "cfgs": argparse.Namespace(lr=0.1)}, risky)
    _expect_refusal(risky, "--trust-checkpoint")
    model, spec = load_gait_model(risky, trust_pickle=True)
    torch.testing.assert_close(model.FCs.fc_bin, raw["model"]["FCs.fc_bin"], rtol=0, atol=0)
    # trusting a file does not make garbage loadable, and the refusal then does not suggest trust
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(UserError) as err:
        load_gait_model(tmp_path / "noise.pt", trust_pickle=True)
    assert "noise.pt" in str(err.value) and "--trust-checkpoint" not in str(err.value)


def test_embedder(model, ckpt, real_sils):
    emb = GaitEmbedder(GaitConfig(model=str(ckpt)), "cpu")
    seqs = [real_sils[:10], real_sils[20:35]]
    out = emb(seqs)
    assert len(out) == 2
    for o, seq in zip(out, seqs):
        assert o.dtype == np.float32 and o.shape == (256, 16)  # an embedding, never logits
        with torch.inference_mode():
            want = model.embed(torch.from_numpy(to_model_input(seq))[None])[0].numpy()
        np.testing.assert_allclose(o, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[0], out[1])
    with pytest.raises(ValueError):
        emb([np.zeros((0, 64, 64), np.uint8)])


def test_embedder_cuts_long_sequences_to_their_first_frames(model, ckpt, real_sils):
    # OpenGait's test loader (collate_fn, sampler 'all'): indices[:frames_all_limit], in order, no sampling
    emb = GaitEmbedder(GaitConfig(model=str(ckpt), max_frames=5), "cpu")
    seq = real_sils[:12]
    got = emb([seq])[0]
    with torch.inference_mode():
        first5 = model.embed(torch.from_numpy(to_model_input(seq[:5]))[None])[0].numpy()
        spread = model.embed(torch.from_numpy(to_model_input(seq[[0, 3, 6, 8, 11]]))[None])[0].numpy()
    np.testing.assert_allclose(got, first5, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, spread)


def test_embedder_needs_a_model():
    with pytest.raises(UserError):
        GaitEmbedder(GaitConfig(model=""), "cpu")
    with pytest.raises(UserError) as err:
        GaitEmbedder(GaitConfig(model=os.path.join("no", "such_gaitbase.pt")), "cpu")
    assert "such_gaitbase.pt" in str(err.value)
