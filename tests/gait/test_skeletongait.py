"""SkeletonGait++ and its skeleton maps against OpenGait's own code.

The expected maps and embeddings in tests/gait/data/skeletongait_opengait.npz were made by OpenGait's code
(datasets/pretreatment_heatmap.py and opengait/modeling/models/skeletongait++.py at 0efafd4) run outside this
repository on recorded MoveNet keypoints of demo1.mp4, with the weights of ``seeded_state``: how, step by step, is
in tests/gait/skeletongait_reference.py. Key names and shapes are written out by hand from OpenGait's model code.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from allinone.config import GaitConfig
from allinone.errors import UserError
from allinone.gait import ARCHS, DeepGaitV2, GaitBase, GaitEmbedder, load_gait_model, matching_archs
from allinone.gait.inputs import to_model_input
from allinone.gait.skeleton_maps import skeleton_input, skeleton_maps
from allinone.gait.skeletongait import SkeletonGaitPP
from tests.gait.skeletongait_reference import (BASE, BLOCKS, CLASSES, DATA, WINDOWS, plaza_sils, seeded_state,
                                               with_holes)

K = 5


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(DATA) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def sils(shared) -> np.ndarray:
    return plaza_sils(shared)


@pytest.fixture(scope="module")
def model() -> SkeletonGaitPP:
    m = SkeletonGaitPP(CLASSES, BLOCKS, BASE)
    m.load_state_dict(seeded_state(m), strict=True)
    return m.eval()


def model_inputs(maps: np.ndarray, sils: np.ndarray) -> torch.Tensor:
    """Maps [T, 2, 64, 64] beside silhouettes [T, 64, 64] → [1, T, 3, 64, 44], as the embedder feeds the model."""
    return torch.from_numpy(to_model_input(skeleton_input(maps, sils)))[None]


# ---------------------------------------------------------------- skeleton maps

def test_maps_equal_opengait(ref):
    got = skeleton_maps(ref["xy"], ref["conf"])
    assert got.dtype == np.uint8 and got.shape == (len(ref["xy"]), 2, 64, 64)
    np.testing.assert_array_equal(got, ref["maps"])
    assert (got[:, 0] > 0).mean() > 0.15 and (got[:, 1] > 0).mean() > 0.1  # a body is drawn in every channel


def test_maps_with_missing_coordinates_equal_opengait(ref):
    holes = with_holes(ref["xy"])
    np.testing.assert_array_equal(holes, ref["holes_xy"])
    got = skeleton_maps(holes, ref["conf"])
    want = ref["maps"].copy()
    want[ref["holes_frames"]] = ref["holes_maps"]
    np.testing.assert_array_equal(got, want)
    # the holes are filled, not drawn at the canvas corner: those frames' maps stay close to the complete ones
    frames = ref["holes_frames"]
    assert len(frames) >= 4
    diff = np.abs(got[frames].astype(int) - ref["maps"][frames])
    assert np.median(diff) == 0 and (diff > 64).mean() < 0.05


def test_maps_do_not_depend_on_position_or_scale(ref):
    # the normaliser moves the mid-hip to the canvas centre and scales to 85 px: crop or frame pixels give the
    # same maps, up to float rounding of the keypoints
    xy, conf = ref["xy"], ref["conf"]
    moved = skeleton_maps(xy * 0.37 + np.float32([210.0, -35.5]), conf)
    diff = np.abs(moved.astype(int) - ref["maps"])
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_confidence_is_the_peak(ref):
    xy, conf = ref["xy"][:3], ref["conf"][:3]
    low = conf.copy()
    low[:, :] = 0.0005  # below OpenGait's eps: nothing is drawn
    assert not skeleton_maps(xy, low).any()
    half = skeleton_maps(xy, np.full_like(conf, 0.5))
    full = skeleton_maps(xy, np.ones_like(conf))
    assert 120 <= half.max() <= 128 and full.max() >= 250


def test_frames_without_height_get_empty_maps(ref):
    xy, conf = ref["xy"][:4].copy(), ref["conf"][:4]
    xy[2, :, 1] = 300.0  # every keypoint on one row: OpenGait divides by zero here
    got = skeleton_maps(xy, conf)
    assert not got[2].any()
    np.testing.assert_array_equal(got[[0, 1, 3]], ref["maps"][[0, 1, 3]])


def test_a_frame_without_keypoints_gets_empty_maps(ref):
    # OpenGait's convention for "not found": coordinates 0 (filled from other frames) and confidence 0 (not drawn)
    xy, conf = ref["xy"][:6].copy(), ref["conf"][:6].copy()
    xy[4], conf[4] = 0.0, 0.0
    got = skeleton_maps(xy, conf)
    assert not got[4].any()
    np.testing.assert_array_equal(got[[0, 1, 2, 3, 5]], ref["maps"][[0, 1, 2, 3, 5]])


@pytest.mark.parametrize("xy_shape, conf_shape", [((5, 17, 3), (5, 17)), ((5, 18, 2), (5, 18)), ((0, 17, 2), (0, 17)),
                                                  ((5, 17, 2), (4, 17))])
def test_maps_refuse_wrong_shapes(xy_shape, conf_shape):
    with pytest.raises(ValueError):
        skeleton_maps(np.ones(xy_shape, np.float32), np.ones(conf_shape, np.float32))


def test_maps_refuse_nan():
    xy = np.ones((2, 17, 2), np.float32)
    xy[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        skeleton_maps(xy, np.ones((2, 17), np.float32))


def test_skeleton_input_order_and_cut():
    maps = np.zeros((2, 2, 64, 64), np.uint8)
    maps[:, 0, :, 10] = 1  # limb map: column 10, the first kept by a 10-column cut
    maps[:, 1, :, 9] = 2  # joint map: column 9, cut away
    sils = np.full((2, 64, 64), 3, np.uint8)
    x = skeleton_input(maps, sils)
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.uint8
    assert (x[:, 0, :, 10] == 1).all() and (x[:, 1, :, 9] == 2).all() and (x[:, 2] == 3).all()
    cut = skeleton_input(maps, sils[..., 10:-10])  # silhouettes already 44 wide: OpenGait cuts the maps to match
    assert cut.shape == (2, 3, 64, 44)
    assert (cut[:, 0, :, 0] == 1).all() and not cut[:, 1].any()
    assert to_model_input(x).shape == (2, 3, 64, 44)
    np.testing.assert_array_equal(to_model_input(x), to_model_input(cut))
    with pytest.raises(ValueError):
        skeleton_input(maps[:1], sils)


# ---------------------------------------------------------------- the model

def test_keys_grew_config():
    # configs/skeletongait/skeletongait++_GREW.yaml: Backbone C 2 (widths 64-128-256-512), blocks [1, 4, 4, 1]
    got = {k: tuple(v.shape) for k, v in SkeletonGaitPP(K).state_dict().items()}
    want = {"sil_layer0.forward_block.0.weight": (64, 1, 3, 3), "map_layer0.forward_block.0.weight": (64, 2, 3, 3),
            "sil_layer0.forward_block.1.running_var": (64,),
            "sil_layer1.forward_block.0.conv1.weight": (64, 64, 3, 3),
            "map_layer1.forward_block.0.bn2.running_mean": (64,),
            # AttentionFusion(64): 1x1 conv 128→4, BN, ReLU, 3x3 conv 4→4, BN, ReLU, 1x1 conv 4→128
            "fusion.conv.forward_block.0.weight": (4, 128, 1, 1), "fusion.conv.forward_block.1.weight": (4,),
            "fusion.conv.forward_block.3.weight": (4, 4, 3, 3), "fusion.conv.forward_block.4.running_var": (4,),
            "fusion.conv.forward_block.6.weight": (128, 4, 1, 1),
            "layer2.0.conv1.forward_block.0.weight": (128, 64, 3, 3), "layer2.0.shortcut3d.weight": (128, 128, 3, 1, 1),
            "layer2.0.downsample.0.weight": (128, 64, 1, 1, 1), "layer2.3.sbn.running_var": (128,),
            "layer3.3.conv2.forward_block.0.weight": (256, 256, 3, 3),
            "layer4.0.downsample.0.weight": (512, 256, 1, 1, 1),
            "FCs.fc_bin": (16, 512, 256), "BNNecks.fc_bin": (16, 256, K), "BNNecks.bn1d.weight": (4096,)}
    assert {k: got.get(k) for k in want} == want
    for absent in ("layer0.forward_block.0.weight", "layer2.1.downsample.0.weight", "layer4.1.sbn.weight"):
        assert absent not in got
    # stems 2 x (6 + 12), fusion 3 convs + 2 BNs, 9 p3d blocks of 18, 3 shortcuts of 6, FCs 1, BNNecks 1+5
    assert len(got) == 2 * (6 + 12) + 3 + 10 + 9 * 18 + 3 * 6 + 1 + 6
    assert SkeletonGaitPP(K).embedding_shape == (256, 16)


def test_recognised_from_keys_and_shapes_read_back(tmp_path):
    small = SkeletonGaitPP(K, (2, 1, 3, 1), 16)
    sd = small.state_dict()
    assert matching_archs(sd) == ["skeletongait++"]
    kw = SkeletonGaitPP.kwargs_from_state(sd)
    assert kw == {"class_num": K, "blocks": (2, 1, 3, 1), "base": 16}
    for other in (GaitBase(class_num=K), DeepGaitV2(K, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64))):
        assert "skeletongait++" not in matching_archs(other.state_dict())
    # DeepGaitV2 with two input planes is OpenGait's plain SkeletonGait (maps only): not this architecture
    assert matching_archs(DeepGaitV2(K, layers=(1, 1, 1, 1), in_channels=2).state_dict()) == ["deepgaitv2"]
    torch.save({"model": sd, "iteration": 3}, tmp_path / "sg.pt")
    loaded, spec = load_gait_model(tmp_path / "sg.pt")
    assert spec.name == "skeletongait++" and spec.channels == 3 and isinstance(loaded, SkeletonGaitPP)
    with pytest.raises(UserError, match="SkeletonGaitPP.*DeepGaitV2|DeepGaitV2.*SkeletonGaitPP"):
        load_gait_model(tmp_path / "sg.pt", "deepgaitv2")
    del sd["fusion.conv.forward_block.3.weight"]
    torch.save({"model": sd}, tmp_path / "cut.pt")
    with pytest.raises(UserError, match="missing.*fusion.conv.forward_block.3.weight"):
        load_gait_model(tmp_path / "cut.pt")


def test_embedding_equals_opengait(ref, sils, model):
    maps = skeleton_maps(ref["xy"], ref["conf"])
    for (a, b), e1, e2 in zip(WINDOWS, ref["embed_1"], ref["embed_2"]):
        x = model_inputs(maps[a:b], sils[a:b])
        with torch.inference_mode():
            got = model.embed(x)
            neck = model.BNNecks(got)[0]
        assert got.shape == (1, 4 * BASE, 16)
        torch.testing.assert_close(got[0], torch.from_numpy(e1), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(neck[0], torch.from_numpy(e2), rtol=1e-4, atol=1e-5)
    # both inputs matter: other maps, or other silhouettes, give another embedding
    x = model_inputs(maps[:8], sils[:8])
    with torch.inference_mode():
        base = model.embed(x)
        no_maps = model.embed(model_inputs(np.zeros_like(maps[:8]), sils[:8]))
        no_sils = model.embed(model_inputs(maps[:8], np.zeros_like(sils[:8])))
    assert (base - no_maps).abs().max() > 0.1 and (base - no_sils).abs().max() > 0.1


def test_model_refuses_silhouettes_alone(model, sils):
    with pytest.raises(ValueError, match="limb map, joint map, silhouette"):
        model.embed(torch.from_numpy(to_model_input(sils[:4]))[None])
    with pytest.raises(ValueError, match="wide"):
        model.embed(torch.zeros(1, 2, 3, 64, 64))


def test_embedder_with_skeleton_inputs(ref, sils, model, tmp_path):
    path = tmp_path / "SkeletonGaitPP-00001.pt"
    torch.save({"model": model.state_dict(), "optimizer": {}, "iteration": 1}, path)
    maps = skeleton_maps(ref["xy"], ref["conf"])
    seqs = [skeleton_input(maps[a:b], sils[a:b]) for a, b in WINDOWS]
    auto = GaitEmbedder(GaitConfig(model=str(path)), "cpu")
    assert auto.arch == "skeletongait++" and auto.metric == "euc" and auto.embedding == "embed_1"
    for got, want in zip(auto(seqs), ref["embed_1"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    neck = GaitEmbedder(GaitConfig(model=str(path), embedding="embed_2"), "cpu")
    for got, want in zip(neck(seqs, batch=2), ref["embed_2"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="skeleton maps.*pose model") as err:
        auto([sils[:5]])  # silhouettes alone
    assert path.name in str(err.value)
    with pytest.raises(ValueError, match=r"\(3, 64, 44\)"):
        auto([seqs[0][:, :, :32]])


def test_auto_embedding_follows_released_configs():
    from allinone.gait.checkpoint import resolve_embedding

    spec = ARCHS["skeletongait++"]
    assert "no released config sets use_emb2" in spec.embedding
    # skeletongait++_CCPG / _GREW / _Gait3D / _SUSTech1K.yaml: class_num 100, 20000, 3000, 250; no use_emb2
    for classes in (100, 20000, 3000, 250):
        assert resolve_embedding("auto", spec, {"in_channels": 1, "class_num": classes}) == "embed_1"
    assert resolve_embedding("embed_2", spec, {}) == "embed_2"  # the class reads use_emb2: allowed on request
    assert ARCHS["skeletongait++"].channels == 3 and all(s.channels == 1 for n, s in ARCHS.items()
                                                         if n != "skeletongait++")


def test_export_onnx_refuses_it_in_one_line(model, tmp_path, capsys):
    from allinone.commands.export_onnx import export_command

    path = tmp_path / "sg.pt"
    torch.save({"model": model.state_dict()}, path)
    assert export_command(["--gait-model", str(path), "--out", str(tmp_path / "sg.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sg.pt" in err and "skeleton maps" in err
    assert not (tmp_path / "sg.onnx").exists()
