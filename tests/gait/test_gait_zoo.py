"""OpenGait model zoo: GaitSet, GaitPart, GaitGL, DeepGaitV2 (and GaitBase) checkpoints, detection, embeddings.

No real checkpoints exist here: models are randomly initialised (with non-trivial BatchNorm statistics) and saved in
OpenGait's checkpoint format. Key names and shapes below are written out by hand from OpenGait's model code and
configs; numerics are checked against plain functional transcriptions of OpenGait's forward passes.
"""
from __future__ import annotations

import itertools
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
from allinone.gait import ARCHS, DeepGaitV2, GaitBase, GaitEmbedder, GaitGL, GaitPart, GaitSet, load_gait_model, matching_archs
from allinone.gait.blocks import Conv2dUnit, GeMHPP
from allinone.gait.gaitgl import GLConv
from allinone.gait.gaitpart import TemporalAggregator
from tests.helpers import randomize_batchnorm

K = 5  # class_num of the test models
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
GREW_PART = ("BC-32", "BC-32", "M", "BC-64", "BC-64", "M", "FC-128-3", "FC-128-3", "FC-256-3", "FC-256-3")
CASIAB_PART = ("BC-32", "BC-32", "M", "FC-64-2", "FC-64-2", "M", "FC-128-3", "FC-128-3")


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights plus non-trivial BatchNorm affine parameters and running statistics; eval mode."""
    torch.manual_seed(seed)
    randomize_batchnorm(model, num_batches_tracked=777)
    if "HPP.p" in model.state_dict():
        with torch.no_grad():
            model.HPP.p.fill_(4.0)  # GeM's learnt exponent: away from its initial value
    return model


# Small instances of every layout (fast), keyed by a test id; the arch they must be recognised as.
SMALL = {
    "gaitbase": ("gaitbase", lambda: GaitBase(class_num=K)),
    "gaitset": ("gaitset", lambda: GaitSet((8, 16, 32), out_channels=24)),
    "gaitpart_casiab": ("gaitpart", lambda: GaitPart(("BC-8", "BC-8", "M", "FC-16-2", "FC-16-2", "M", "FC-32-3",
                                                      "FC-32-3"), out_channels=24)),
    "gaitpart_grew": ("gaitpart", lambda: GaitPart(("BC-4", "BC-4", "M", "BC-8", "BC-8", "M", "FC-16-3", "FC-16-3",
                                                    "FC-32-3", "FC-32-3"), out_channels=24)),
    "gaitgl_casiab": ("gaitgl", lambda: GaitGL((4, 8, 16), class_num=K)),
    "gaitgl_grew": ("gaitgl", lambda: GaitGL((4, 8, 8, 16), class_num=K)),
    "gaitgl_bnneck": ("gaitgl", lambda: GaitGL((4, 8, 8, 16), class_num=K, head="bnneck")),
    "deepgaitv2_p3d": ("deepgaitv2", lambda: DeepGaitV2(K, "p3d", (1, 2, 2, 1), (8, 16, 32, 64))),
    "deepgaitv2_2d": ("deepgaitv2", lambda: DeepGaitV2(K, "2d", (1, 1, 2, 1), (8, 16, 32, 64))),
    "deepgaitv2_3d": ("deepgaitv2", lambda: DeepGaitV2(K, "3d", (2, 1, 1, 1), (8, 16, 16, 32))),
}


def save_opengait(model: torch.nn.Module, path: Path, iteration: int = 1234) -> Path:
    """What OpenGait's BaseModel.save_ckpt writes (Adam as in the GaitSet/GaitPart/GaitGL configs)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[150000], gamma=0.1)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "iteration": iteration}, path)
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, tuple[str, torch.nn.Module, Path]]:
    """id → (arch, model, checkpoint path)."""
    d = tmp_path_factory.mktemp("zoo")
    out = {}
    for i, (name, (arch, make)) in enumerate(SMALL.items()):
        model = randomized(make(), seed=i)
        out[name] = (arch, model, save_opengait(model, d / f"{name}-01234.pt"))
    return out


@pytest.fixture(scope="module")
def real_sils(shared) -> np.ndarray:
    files = sorted((shared / "fixtures" / "silhouettes" / "plaza_gallery" / "001").glob("*.png"))
    aligned, _ = align_sequence(np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]))
    return aligned


def sils(n: int, s: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, s, 64, 44, generator=g) > 0.5).float()


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- key names and shapes from OpenGait's sources

def test_gaitset_keys_casiab_config():
    # configs/gaitset (CASIA-B): in_channels [1, 32, 64, 128], SeparateFCs in 128 out 256 parts 62
    want = {
        "set_block1.forward_block.0.conv.weight": (32, 1, 5, 5),
        "set_block1.forward_block.2.conv.weight": (32, 32, 3, 3),
        "set_block2.forward_block.0.conv.weight": (64, 32, 3, 3),
        "set_block2.forward_block.2.conv.weight": (64, 64, 3, 3),
        "set_block3.forward_block.0.conv.weight": (128, 64, 3, 3),
        "set_block3.forward_block.2.conv.weight": (128, 128, 3, 3),
        "gl_block2.0.conv.weight": (64, 32, 3, 3), "gl_block2.2.conv.weight": (64, 64, 3, 3),
        "gl_block3.0.conv.weight": (128, 64, 3, 3), "gl_block3.2.conv.weight": (128, 128, 3, 3),
        "Head.fc_bin": (62, 128, 256),
    }
    assert shapes(GaitSet((32, 64, 128), 256)) == want


def test_gaitpart_keys_casiab_config():
    # configs/gaitpart/gaitpart.yaml: BC-32 BC-32 M FC-64-2 FC-64-2 M FC-128-3 FC-128-3, SeparateFCs 128→128 x16
    want = {}
    for i, (c_out, c_in, k) in zip((0, 2, 5, 7, 10, 12), ((32, 1, 5), (32, 32, 3), (64, 32, 3), (64, 64, 3),
                                                          (128, 64, 3), (128, 128, 3))):
        want[f"Backbone.forward_block.feature.{i}.conv.weight"] = (c_out, c_in, k, k)
    for p in range(16):  # TemporalFeatureAggregator(in_channels=128, squeeze=4, parts_num=16)
        want[f"TFA.pooling_func.conv1d3x1.{p}.0.conv.weight"] = (32, 128, 3)
        want[f"TFA.pooling_func.conv1d3x1.{p}.2.conv.weight"] = (128, 32, 1)
        want[f"TFA.pooling_func.conv1d3x3.{p}.0.conv.weight"] = (32, 128, 3)
        want[f"TFA.pooling_func.conv1d3x3.{p}.2.conv.weight"] = (128, 32, 3)
    want["Head.fc_bin"] = (16, 128, 128)
    model = GaitPart(CASIAB_PART, out_channels=128)
    assert shapes(model) == want
    assert GaitPart.kwargs_from_state(model.state_dict())["layers_cfg"] == CASIAB_PART


def test_gaitpart_grew_layout_read_back():
    model = GaitPart(GREW_PART, out_channels=256)
    sd = model.state_dict()
    assert sd["Backbone.forward_block.feature.16.conv.weight"].shape == (256, 256, 3, 3)
    assert sd["TFA.pooling_func.conv1d3x3.15.2.conv.weight"].shape == (256, 64, 3)
    kw = GaitPart.kwargs_from_state(sd)
    assert kw == {"layers_cfg": GREW_PART, "in_channels": 1, "out_channels": 256, "parts": 16, "squeeze": 4}


def test_gaitgl_keys_casiab_config():
    # configs/gaitgl/gaitgl.yaml: channels [32, 64, 128], class_num 74, original BN head
    want = {"conv3d.0.conv3d.weight": (32, 1, 3, 3, 3), "LTA.0.conv3d.weight": (32, 32, 3, 1, 1),
            "GLConvA0.global_conv3d.conv3d.weight": (64, 32, 3, 3, 3),
            "GLConvA0.local_conv3d.conv3d.weight": (64, 32, 3, 3, 3),
            "GLConvA1.global_conv3d.conv3d.weight": (128, 64, 3, 3, 3),
            "GLConvA1.local_conv3d.conv3d.weight": (128, 64, 3, 3, 3),
            "GLConvB2.global_conv3d.conv3d.weight": (128, 128, 3, 3, 3),
            "GLConvB2.local_conv3d.conv3d.weight": (128, 128, 3, 3, 3),
            "HPP.p": (1,), "Head0.fc_bin": (64, 128, 128), "Head1.fc_bin": (64, 128, 74)}
    want.update({f"Bn.{b}": () if b == "num_batches_tracked" else (128,) for b in BN})
    assert shapes(GaitGL((32, 64, 128), 74)) == want


def test_gaitgl_keys_grew_configs():
    # gaitgl_GREW.yaml / gaitgl_OUMVLP.yaml: channels [32, 64, 128, 256], two GLConvs per stage
    got = shapes(GaitGL((32, 64, 128, 256), K))
    assert got["conv3d.2.conv3d.weight"] == (32, 32, 3, 3, 3)
    assert got["GLConvA0.1.local_conv3d.conv3d.weight"] == (64, 64, 3, 3, 3)
    assert got["GLConvB2.0.global_conv3d.conv3d.weight"] == (256, 128, 3, 3, 3)
    assert got["GLConvB2.1.global_conv3d.conv3d.weight"] == (256, 256, 3, 3, 3)
    assert got["Head0.fc_bin"] == (64, 256, 256) and got["Head1.fc_bin"] == (64, 256, K)
    assert len(got) == 2 + 1 + 12 + 1 + 1 + 5 + 1
    # gaitgl_GREW_BNNeck.yaml: SeparateBNNecks(parts 64, in 256) instead of Bn + Head1
    neck = shapes(GaitGL((32, 64, 128, 256), K, head="bnneck"))
    assert neck["BNNecks.fc_bin"] == (64, 256, K) and neck["BNNecks.bn1d.running_var"] == (256 * 64,)
    assert not any(k.startswith(("Bn.", "Head1")) for k in neck)


def test_deepgaitv2_keys_grew_config():
    # configs/deepgaitv2/DeepGaitV2_grew.yaml: mode p3d, layers [1, 4, 4, 1], channels [64, 128, 256, 512]
    got = shapes(DeepGaitV2(K))
    want = {"layer0.forward_block.0.weight": (64, 1, 3, 3), "layer0.forward_block.1.running_var": (64,),
            "layer1.forward_block.0.conv1.weight": (64, 64, 3, 3), "layer1.forward_block.0.bn2.bias": (64,),
            "layer2.0.conv1.forward_block.0.weight": (128, 64, 3, 3),
            "layer2.0.conv1.forward_block.1.running_mean": (128,),
            "layer2.0.shortcut3d.weight": (128, 128, 3, 1, 1), "layer2.0.sbn.weight": (128,),
            "layer2.0.downsample.0.weight": (128, 64, 1, 1, 1), "layer2.0.downsample.1.running_mean": (128,),
            "layer2.3.conv2.forward_block.0.weight": (128, 128, 3, 3),
            "layer3.3.shortcut3d.weight": (256, 256, 3, 1, 1),
            "layer4.0.downsample.0.weight": (512, 256, 1, 1, 1),
            "FCs.fc_bin": (16, 512, 256), "BNNecks.fc_bin": (16, 256, K), "BNNecks.bn1d.weight": (4096,)}
    assert {k: got.get(k) for k in want} == want
    for absent in ("layer2.1.downsample.0.weight", "layer1.forward_block.0.downsample.0.weight", "layer2.4.sbn.bias"):
        assert absent not in got
    # stem 1+5, stage-1 block 12, 9 p3d blocks of 18, 3 shortcuts of 6, FCs 1, BNNecks 1+5
    assert len(got) == 6 + 12 + 9 * 18 + 3 * 6 + 1 + 6


def test_deepgaitv2_other_modes_keys():
    two = shapes(DeepGaitV2(K, "2d", (1, 1, 1, 1)))
    assert two["layer2.forward_block.0.conv1.weight"] == (128, 64, 3, 3)
    assert two["layer2.forward_block.0.downsample.0.weight"] == (128, 64, 1, 1)
    three = shapes(DeepGaitV2(K, "3d", (1, 1, 1, 1)))
    assert three["layer3.0.conv1.weight"] == (256, 128, 3, 3, 3) and three["layer3.0.bn2.running_mean"] == (256,)
    assert three["layer4.0.downsample.0.weight"] == (512, 256, 1, 1, 1)


@pytest.mark.parametrize("name", list(SMALL))
def test_constructor_arguments_read_from_shapes(name):
    model = SMALL[name][1]()
    cls = type(model)
    assert shapes(cls(**cls.kwargs_from_state(model.state_dict()))) == shapes(model)


# ---------------------------------------------------------------- detection, loading, refusals

@pytest.mark.parametrize("name", list(SMALL))
def test_detection_is_unambiguous(zoo, name):
    arch, model, _ = zoo[name]
    assert matching_archs(model.state_dict()) == [arch]


@pytest.mark.parametrize("name", list(SMALL))
def test_checkpoint_round_trip(zoo, name):
    arch, model, path = zoo[name]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model", "optimizer", "scheduler", "iteration"}
    loaded, spec = load_gait_model(path)  # auto
    assert spec.name == arch and not loaded.training and type(loaded) is type(model)
    forced, _ = load_gait_model(path, arch)
    x = sils(1, 5, seed=3)
    with torch.inference_mode():
        want = model.embed(x)
        got = loaded.embed(x)
        other = model.embed(sils(1, 5, seed=4))
    assert got.shape == (1, *loaded.embedding_shape)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(forced.embed(x), want, rtol=0, atol=0)
    assert not torch.allclose(want, other)  # the input matters


def test_wrong_arch_forced_is_refused(zoo):
    firsts = {}
    for arch, _, path in zoo.values():
        firsts.setdefault(arch, path)
    for (a, path), b in itertools.product(firsts.items(), ARCHS):
        if a == b:
            continue
        with pytest.raises(UserError) as err:
            load_gait_model(path, b)
        msg = str(err.value)
        assert path.name in msg and "\n" not in msg, msg
        assert ARCHS[a].title in msg and ARCHS[b].title in msg, msg


def test_refusals(zoo, tmp_path):
    _, model, path = zoo["gaitset"]
    sd = dict(model.state_dict())
    with pytest.raises(UserError, match="unknown gait architecture"):
        load_gait_model(path, "gaitnet")
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "alien.pt")
    with pytest.raises(UserError, match="match none") as err:
        load_gait_model(tmp_path / "alien.pt")
    assert "alien.pt" in str(err.value)
    # GaitSet with a non-OpenGait bin layout
    torch.save({"model": {**sd, "Head.fc_bin": torch.zeros(30, 32, 24)}}, tmp_path / "bins.pt")
    with pytest.raises(UserError, match="62") as err:
        load_gait_model(tmp_path / "bins.pt")
    assert "bins.pt" in str(err.value)
    # GaitPart whose Plain layout is no OpenGait config (halving unknowable)
    _, part, _ = zoo["gaitpart_casiab"]
    psd = {k: v for k, v in part.state_dict().items() if ".feature.12." not in k}
    torch.save({"model": psd}, tmp_path / "layout.pt")
    with pytest.raises(UserError, match="matches no OpenGait GaitPart config"):
        load_gait_model(tmp_path / "layout.pt")
    # a key missing / a tensor of the wrong shape
    _, dgv2, _ = zoo["deepgaitv2_p3d"]
    dsd = dict(dgv2.state_dict())
    del dsd["layer3.1.sbn.running_var"]
    torch.save({"model": dsd}, tmp_path / "missing.pt")
    with pytest.raises(UserError, match="missing.*layer3.1.sbn.running_var"):
        load_gait_model(tmp_path / "missing.pt")
    dsd = dict(dgv2.state_dict())
    dsd["layer2.0.shortcut3d.weight"] = torch.zeros(16, 16, 1, 1, 1)
    torch.save({"model": dsd}, tmp_path / "shape.pt")
    with pytest.raises(UserError, match="wrong shape.*shortcut3d"):
        load_gait_model(tmp_path / "shape.pt")


# ---------------------------------------------------------------- modules vs plain transcriptions

def test_glconv_matches_transcription():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 16, 6)
    for strips, fm in ((8, False), (2, True), (1, False)):
        m = GLConv(3, 5, strips, fm).eval()
        wg, wl = m.global_conv3d.conv3d.weight, m.local_conv3d.conv3d.weight
        g = F.conv3d(x, wg, padding=1)
        rows = 16 // strips
        loc = torch.cat([F.conv3d(x[:, :, :, r:r + rows], wl, padding=1) for r in range(0, 16, rows)], dim=3)
        want = F.leaky_relu(torch.cat([g, loc], 3)) if fm else F.leaky_relu(g) + F.leaky_relu(loc)
        with torch.no_grad():
            torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)
            assert m(x).shape[3] == (32 if fm else 16)


def test_gem_matches_transcription():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 5) * 2
    m = GeMHPP()
    with torch.no_grad():
        m.p.fill_(3.0)
        got = m(x)
    want = (x.clamp(min=1e-6) ** 3).mean(-1) ** (1 / 3)  # one band per row
    assert got.shape == (2, 3, 64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_focal_conv_matches_transcription():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 16, 7)
    m = Conv2dUnit(2, 4, 3, 1, 1, strips=4)
    w = m.conv.weight
    want = torch.cat([F.conv2d(x[:, :, r:r + 4], w, padding=1) for r in (0, 4, 8, 12)], dim=2)
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(m(x), F.conv2d(x, w, padding=1))  # the strips matter


def _window(x: torch.Tensor, k: int, how: str) -> torch.Tensor:
    """Sliding window of k frames, stride 1, 'same' length: zero-padded mean (pad counted) or -inf-padded max."""
    pad = k // 2
    if how == "mean":
        return F.pad(x, (pad, pad)).unfold(-1, k, 1).mean(-1)
    return F.pad(x, (pad, pad), value=float("-inf")).unfold(-1, k, 1).amax(-1)


def tfa_reference(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """OpenGait's TemporalFeatureAggregator, part by part. x [n, c, s, p] → [n, c, p]."""
    out = []
    for i in range(x.shape[3]):
        f = x[..., i]  # [n, c, s]
        total = 0
        for net, k in (("conv1d3x1", 3), ("conv1d3x3", 5)):
            w0, w2 = sd[f"{prefix}{net}.{i}.0.conv.weight"], sd[f"{prefix}{net}.{i}.2.conv.weight"]
            score = torch.sigmoid(F.conv1d(F.leaky_relu(F.conv1d(f, w0, padding=1)), w2, padding=w2.shape[-1] // 2))
            total = total + (_window(f, k, "mean") + _window(f, k, "max")) * score
        out.append(total.max(-1).values)
    return torch.stack(out, dim=-1)


def test_temporal_aggregator_matches_per_part_transcription():
    torch.manual_seed(0)
    m = randomized(TemporalAggregator(8, parts=4, squeeze=2), 1)
    for s in (1, 2, 7):
        x = torch.randn(2, 8, s, 4)
        with torch.no_grad():
            torch.testing.assert_close(m(x), tfa_reference(m.state_dict(), "", x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- whole models vs functional transcriptions

def _bn(sd, p, x):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=1e-5)


def _hpp(x, bins):
    n, c = x.shape[:2]
    return torch.cat([x.view(n, c, b, -1).mean(-1) + x.view(n, c, b, -1).max(-1).values for b in bins], -1)


def _parts_fc(x, w):  # x [n, c, p], w [p, c, c'] → [n, c', p]
    return torch.einsum("ncp,pcd->ndp", x, w)


def gaitset_reference(sd, sils):
    n, s, h, w = sils.shape

    def block(x, p, first, pool):
        x = F.leaky_relu(F.conv2d(x, sd[f"{p}.0.conv.weight"], padding=2 if first else 1))
        x = F.leaky_relu(F.conv2d(x, sd[f"{p}.2.conv.weight"], padding=1))
        return F.max_pool2d(x, 2) if pool else x

    def tmax(x):
        return x.view(n, s, *x.shape[1:]).max(1).values

    o1 = block(sils.reshape(n * s, 1, h, w), "set_block1.forward_block", True, True)
    o2 = block(o1, "set_block2.forward_block", False, True)
    o3 = block(o2, "set_block3.forward_block", False, False)
    gl = block(tmax(o1), "gl_block2", False, True) + tmax(o2)
    gl = block(gl, "gl_block3", False, False) + tmax(o3)
    bins = (16, 8, 4, 2, 1)
    return _parts_fc(torch.cat([_hpp(tmax(o3), bins), _hpp(gl, bins)], -1), sd["Head.fc_bin"])


def gaitpart_reference(sd, layers, sils):
    n, s, h, w = sils.shape
    x = sils.reshape(n * s, 1, h, w)
    i = 0
    for token in layers:
        if token == "M":
            x = F.max_pool2d(x, 2)
            i += 1
            continue
        wt = sd[f"Backbone.forward_block.feature.{i}.conv.weight"]
        pad = wt.shape[-1] // 2
        halving = int(token.split("-")[2]) if token.startswith("FC") else 0
        rows = x.shape[2] // 2 ** halving
        x = torch.cat([F.conv2d(x[:, :, r:r + rows], wt, padding=pad) for r in range(0, x.shape[2], rows)], 2)
        x = F.leaky_relu(x)
        i += 2
    p = sd["Head.fc_bin"].shape[0]
    feat = _hpp(x, (p,)).view(n, s, -1, p).permute(0, 2, 1, 3)  # [n, c, s, p]
    return _parts_fc(tfa_reference(sd, "TFA.pooling_func.", feat), sd["Head.fc_bin"])


def gaitgl_reference(sd, sils):
    nested = "GLConvA0.0.global_conv3d.conv3d.weight" in sd
    x = sils.unsqueeze(1)
    if x.shape[2] < 3:
        x = x.repeat(1, 1, 3 if x.shape[2] == 1 else 2, 1, 1)

    def gl(x, p, halving, fm):
        g = F.conv3d(x, sd[f"{p}.global_conv3d.conv3d.weight"], padding=1)
        rows = x.shape[3] // 2 ** halving
        loc = torch.cat([F.conv3d(x[:, :, :, r:r + rows], sd[f"{p}.local_conv3d.conv3d.weight"], padding=1)
                         for r in range(0, x.shape[3], rows)], 3)
        return F.leaky_relu(torch.cat([g, loc], 3)) if fm else F.leaky_relu(g) + F.leaky_relu(loc)

    x = F.leaky_relu(F.conv3d(x, sd["conv3d.0.conv3d.weight"], padding=1))
    if nested:
        x = F.leaky_relu(F.conv3d(x, sd["conv3d.2.conv3d.weight"], padding=1))
    x = F.leaky_relu(F.conv3d(x, sd["LTA.0.conv3d.weight"], stride=(3, 1, 1)))
    if nested:
        x = gl(gl(x, "GLConvA0.0", 1, False), "GLConvA0.1", 1, False)
        x = F.max_pool3d(x, (1, 2, 2))
        x = gl(gl(x, "GLConvA1.0", 1, False), "GLConvA1.1", 1, False)
        x = gl(gl(x, "GLConvB2.0", 1, False), "GLConvB2.1", 1, True)
    else:
        x = F.max_pool3d(gl(x, "GLConvA0", 3, False), (1, 2, 2))
        x = gl(gl(x, "GLConvA1", 3, False), "GLConvB2", 3, True)
    x = x.max(2).values  # [n, c, 64, w]
    p = sd["HPP.p"]
    gem = F.avg_pool2d(x.clamp(min=1e-6).pow(p), (1, x.shape[-1])).pow(1.0 / p).squeeze(-1)  # [n, c, 64]
    gait = _parts_fc(gem, sd["Head0.fc_bin"])
    if "BNNecks.fc_bin" in sd:
        # OpenGait gaitgl.py, forward(), BNNeck branch: "bnft, logi = self.BNNecks(gait)" then "embed = gait", and
        # inference_feat = {'embeddings': embed}: the Head0 output, not the (normalised) BNNeck feature.
        return gait
    return _bn(sd, "Bn", gait)


def deepgaitv2_p3d_reference(sd, sils):
    n, s = sils.shape[:2]

    def frames(x, fn):  # [n, c, s, h, w] per frame
        y = fn(x.transpose(1, 2).reshape(n * s, *x.shape[1:2], *x.shape[3:]))
        return y.reshape(n, s, *y.shape[1:]).transpose(1, 2)

    x = sils.unsqueeze(1)
    x = frames(x, lambda f: F.relu(_bn(sd, "layer0.forward_block.1",
                                       F.conv2d(f, sd["layer0.forward_block.0.weight"], padding=1))))
    j = 0
    while f"layer1.forward_block.{j}.conv1.weight" in sd:
        b = f"layer1.forward_block.{j}"
        x = frames(x, lambda f, b=b: F.relu(f + _bn(sd, f"{b}.bn2", F.conv2d(F.relu(_bn(
            sd, f"{b}.bn1", F.conv2d(f, sd[f"{b}.conv1.weight"], padding=1))), sd[f"{b}.conv2.weight"], padding=1))))
        j += 1
    for i, stride in ((2, 2), (3, 2), (4, 1)):
        j = 0
        while f"layer{i}.{j}.shortcut3d.weight" in sd:
            b = f"layer{i}.{j}"
            st = stride if j == 0 else 1
            out = frames(x, lambda f, b=b, st=st: F.relu(_bn(sd, f"{b}.conv1.forward_block.1", F.conv2d(
                f, sd[f"{b}.conv1.forward_block.0.weight"], stride=st, padding=1))))
            out = F.relu(out + _bn(sd, f"{b}.sbn", F.conv3d(out, sd[f"{b}.shortcut3d.weight"], padding=(1, 0, 0))))
            out = frames(out, lambda f, b=b: _bn(sd, f"{b}.conv2.forward_block.1",
                                                 F.conv2d(f, sd[f"{b}.conv2.forward_block.0.weight"], padding=1)))
            if f"{b}.downsample.0.weight" in sd:
                x = _bn(sd, f"{b}.downsample.1", F.conv3d(x, sd[f"{b}.downsample.0.weight"], stride=(1, st, st)))
            x = F.relu(out + x)
            j += 1
    return _parts_fc(_hpp(x.max(2).values, (16,)), sd["FCs.fc_bin"])


@pytest.mark.parametrize("name, ref", [
    ("gaitset", gaitset_reference),
    ("gaitpart_casiab", None), ("gaitpart_grew", None),
    ("gaitgl_casiab", gaitgl_reference), ("gaitgl_grew", gaitgl_reference), ("gaitgl_bnneck", gaitgl_reference),
    ("deepgaitv2_p3d", deepgaitv2_p3d_reference),
])
def test_embedding_equals_functional_transcription(zoo, name, ref):
    _, model, _ = zoo[name]
    sd = model.state_dict()
    if ref is None:  # GaitPart needs its layer list
        def ref(sd, x):
            return gaitpart_reference(sd, model.layers_cfg, x)
    for s in (1, 2, 7):
        x = sils(2, s, seed=s)
        with torch.inference_mode():
            torch.testing.assert_close(model.embed(x), ref(sd, x), rtol=1e-4, atol=1e-4)


def test_frame_chunking_is_exact(zoo):
    for name in ("gaitset", "gaitpart_casiab"):
        _, model, _ = zoo[name]
        x = sils(1, 9, seed=5)
        with torch.inference_mode():
            whole = model.embed(x)
            model.frame_chunk = 4
            try:
                chunked = model.embed(x)
            finally:
                model.frame_chunk = 64
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_gaitgl_short_sequences_are_tiled(zoo):
    _, model, _ = zoo["gaitgl_casiab"]
    a = sils(1, 2, seed=6)
    with torch.inference_mode():
        torch.testing.assert_close(model.embed(a[:, :1]), model.embed(a[:, [0, 0, 0]]), rtol=0, atol=0)
        torch.testing.assert_close(model.embed(a), model.embed(a[:, [0, 1, 0, 1]]), rtol=0, atol=0)


def test_gaitgl_and_deepgaitv2_logits_are_not_the_embedding(zoo):
    for name, k in (("gaitgl_grew", K), ("deepgaitv2_p3d", K)):
        _, model, _ = zoo[name]
        x = sils(1, 4, seed=8)
        with torch.inference_mode():
            out = model(x)
            torch.testing.assert_close(out["embed"], model.embed(x), rtol=0, atol=0)
        assert out["logits"].shape[1] == k and out["embed"].shape[1] != k


# ---------------------------------------------------------------- the embedding stage

@pytest.mark.parametrize("name", ["gaitset", "gaitpart_grew", "gaitgl_bnneck", "deepgaitv2_p3d"])
def test_embedder_per_arch(zoo, real_sils, name):
    arch, model, path = zoo[name]
    emb = GaitEmbedder(GaitConfig(model=str(path)), "cpu")
    assert GaitConfig().arch == "auto"
    assert emb.arch == arch and emb.metric == "euc" and emb.spec.input_size == (64, 44)
    seqs = [real_sils[:6], real_sils[10:14]]
    out = emb(seqs)
    for o, seq in zip(out, seqs):
        assert o.dtype == np.float32 and o.shape == emb.embedding_shape
        with torch.inference_mode():
            want = model.embed(torch.from_numpy(to_model_input(seq))[None])[0].numpy()
        np.testing.assert_allclose(o, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[0], out[1])
    other = "gaitbase" if arch != "gaitbase" else "gaitset"
    with pytest.raises(UserError) as err:
        GaitEmbedder(GaitConfig(model=str(path), arch=other), "cpu")
    assert path.name in str(err.value)


def test_documented_embedding_shapes():
    # OpenGait configs: (model, embedding [c, p])
    cases = [(GaitBase(class_num=K), (256, 16)), (GaitSet((32, 64, 128), 256), (256, 62)),
             (GaitSet((64, 128, 256), 256), (256, 62)), (GaitPart(CASIAB_PART, out_channels=128), (128, 16)),
             (GaitPart(GREW_PART, out_channels=256), (256, 16)), (GaitGL((32, 64, 128), K), (128, 64)),
             (GaitGL((32, 64, 128, 256), K), (256, 64)), (DeepGaitV2(K, layers=(1, 1, 1, 1)), (256, 16))]
    x = sils(1, 1, seed=9)
    for model, want in cases:
        assert model.embedding_shape == want
        if not isinstance(model, (GaitGL, DeepGaitV2)):  # the 3-D ones are slow at full width: shape only
            with torch.inference_mode():
                assert model.eval().embed(x).shape == (1, *want)
