from __future__ import annotations

import re

import copy
import dataclasses
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from allinone.stages.align import align_sequence
from allinone.config import GaitConfig
from allinone.errors import UserError
from allinone.gait import GaitBase, GaitEmbedder, save_gaitbase_checkpoint
from allinone.gait.backends import embedder_for
from allinone.gait.onnx import ExportMismatchError, OnnxGaitEmbedder, export_onnx
from allinone.commands.export_onnx import export_command

# Float32 ORT vs float32 torch, as a fraction of the largest |embedding| value. Measured: 3.5e-7 .. 4.7e-7
# (s = 1..120) — different conv kernels summing in different orders. A real export bug (an axis baked in,
# a lost BatchNorm, a dropped frame) moves the output by tens of percent, so 1e-4 still catches every one.
REL_TOL = 1e-4


def random_gaitbase(seed: int) -> GaitBase:
    """GaitBase with random weights and BatchNorm statistics far from the identity (so BN folding is tested)."""
    torch.manual_seed(seed)
    model = GaitBase(class_num=5)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.running_mean.normal_(0.0, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.normal_(1.0, 0.1)
                mod.bias.normal_(0.0, 0.1)
    return model.eval()


def silhouettes(n: int, s: int, seed: int) -> torch.Tensor:
    """Binary silhouette-like model input [n, s, 64, 44] in {0, 1}."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, s, 64, 44, generator=gen) > 0.5).float()


def max_rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def model() -> GaitBase:
    return random_gaitbase(seed=3)


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    return save_gaitbase_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "GaitBase-00010.pt", iteration=10)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "gaitbase.onnx")


@pytest.fixture(scope="module")
def real_sils(shared) -> np.ndarray:
    files = sorted((shared / "fixtures" / "silhouettes" / "plaza_gallery" / "002").glob("*.png"))
    aligned, _ = align_sequence(np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]))
    return aligned


def test_exported_graph_has_dynamic_batch_and_length(exported):
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (i,), (o,) = sess.get_inputs(), sess.get_outputs()
    assert (i.name, o.name) == ("sils", "embedding")
    assert isinstance(i.shape[0], str) and isinstance(i.shape[1], str) and i.shape[2:] == [64, 44]
    assert isinstance(o.shape[0], str) and o.shape[1:] == [256, 16]


@pytest.mark.parametrize("n,s", [(1, 1), (1, 7), (1, 33), (2, 7)])
def test_ort_matches_torch(exported, model, n, s):
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    x = silhouettes(n, s, seed=s)
    with torch.inference_mode():
        ref = model.embed(x).numpy()  # s = 33 runs torch's chunked path (16 frames a call); ONNX is unchunked
    got = sess.run(None, {"sils": x.numpy()})[0]
    assert got.shape == (n, 256, 16) and got.dtype == np.float32
    assert max_rel(got, ref) <= REL_TOL


def test_ort_is_as_exact_as_torch_float32(exported, model):
    """Against float64 arithmetic, ORT's error is of the size of torch float32's own (measured ratio 0.5 .. 1.5)."""
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    x = silhouettes(1, 7, seed=11)
    with torch.inference_mode():
        ref32 = model.embed(x).numpy()
        ref64 = copy.deepcopy(model).double().embed(x.double()).numpy()
    got = sess.run(None, {"sils": x.numpy()})[0]
    assert np.abs(got - ref64).max() <= 5 * np.abs(ref32 - ref64).max()


def test_export_leaves_the_model_as_it_was(model, exported):
    assert model.frame_chunk == 16 and not model.training
    assert next(model.parameters()).device.type == "cpu"


class _TinyGait(torch.nn.Module):
    """A non-GaitBase model with an ``embed``: per-frame conv, temporal max, 4 horizontal parts."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] → [n, 8, 4]."""
        n, s, h, w = sils.shape
        f = self.conv(sils.reshape(n * s, 1, h, w)).reshape(n, s, 8, h, w).amax(1)  # [n, 8, h, w]
        return f.reshape(n, 8, 4, -1).mean(-1)


class _BakedLength(_TinyGait):
    """Traces wrongly: the sequence length becomes a Python number, a constant of the traced graph."""

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        return super().embed(sils) * float(sils.shape[1])


def test_export_is_generic_over_modules_with_embed(tmp_path):
    tiny = _TinyGait().eval()
    out = export_onnx(tiny, tmp_path / "tiny.onnx", input_hw=(32, 24))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for s in (1, 4, 13):
        x = torch.rand(1, s, 32, 24)
        with torch.inference_mode():
            ref = tiny.embed(x).numpy()
        assert max_rel(sess.run(None, {"sils": x.numpy()})[0], ref) <= REL_TOL


def test_export_refuses_a_graph_that_differs_from_torch(tmp_path):
    out = tmp_path / "baked.onnx"
    with pytest.raises(ExportMismatchError, match=r"does not match torch \[n=1, s=11\]: max \|onnx - torch\|"):
        export_onnx(_BakedLength().eval(), out, input_hw=(32, 24))
    assert list(tmp_path.iterdir()) == []  # neither the model nor its temporary file is left behind


def test_export_command_writes_a_loadable_model(ckpt, tmp_path, capsys):
    out = tmp_path / "models" / "gait.onnx"
    assert export_command(["--gait-model", str(ckpt), "--out", str(out), "--opset", "18"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[-1] == str(out) and captured.err == ""
    # the difference it measured, as a fraction of the output's scale, within the allowed one
    found = re.search(r"largest difference (\S+) at output scale (\S+) \((\S+) of it", lines[0])
    assert found and 0 <= float(found.group(1)) <= 1e-4 * float(found.group(2)) + 1e-6
    assert [p.name for p in out.parent.iterdir()] == ["gait.onnx"]  # the temporary file was renamed
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)  # usual umask permissions

    import onnx
    assert [o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")] == [18]
    stage = OnnxGaitEmbedder(GaitConfig(model=str(out)))
    assert (stage.arch, stage.metric, stage.embedding_shape) == ("gaitbase", "euc", (256, 16))
    with pytest.raises(UserError, match="not gaitset"):
        OnnxGaitEmbedder(GaitConfig(model=str(out), arch="gaitset"))


@pytest.mark.parametrize("case", ["truncated", "missing"])
def test_export_command_bad_checkpoint(ckpt, tmp_path, capsys, case):
    bad = tmp_path / "GaitBase-bad.pt"
    if case == "truncated":
        bad.write_bytes(ckpt.read_bytes()[:4096])
    out = tmp_path / "gait.onnx"
    assert export_command(["--gait-model", str(bad), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    assert not out.exists()


def test_export_command_wants_an_onnx_suffix(ckpt, tmp_path, capsys):
    out = tmp_path / "gait.bin"
    assert export_command(["--gait-model", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out) in err and ".onnx" in err
    assert not out.exists()


def test_onnx_embedder_matches_torch_embedder(ckpt, exported, real_sils):
    assert len(real_sils) > 40
    config = GaitConfig(model=str(ckpt), max_frames=24)
    torch_stage = GaitEmbedder(config)
    onnx_stage = OnnxGaitEmbedder(dataclasses.replace(config, model=str(exported)))
    rng = np.random.default_rng(0)
    noise = (rng.random((3, 64, 64)) > 0.5).astype(np.uint8) * 255
    seqs = [real_sils, real_sils[:7], noise, real_sils[:1]]  # 59 frames > max_frames: both sample down to 24
    want, got = torch_stage(seqs), onnx_stage(seqs)
    assert len(got) == len(seqs)
    for g, w in zip(got, want):
        assert g.shape == (256, 16) and g.dtype == np.float32
        assert max_rel(g, w) <= REL_TOL
    # The agreement on the long sequence depends on sampling the same frames: all 59 give another embedding.
    unsampled = OnnxGaitEmbedder(dataclasses.replace(config, model=str(exported), max_frames=720))([real_sils])[0]
    assert max_rel(unsampled, want[0]) > 10 * REL_TOL  # measured 5.6e-3


def test_embedder_for_picks_by_suffix(ckpt, exported, tmp_path):
    config = GaitConfig(max_frames=30)
    onnx_stage = embedder_for(exported, config)
    assert isinstance(onnx_stage, OnnxGaitEmbedder) and onnx_stage.config.max_frames == 30
    assert isinstance(embedder_for(ckpt, config), GaitEmbedder)
    with pytest.raises(UserError, match="unknown gait model type"):
        embedder_for(tmp_path / "gait.tflite", config)
    with pytest.raises(UserError, match="no gait model"):
        embedder_for("", config)


def _fixed_length_model(path: Path) -> Path:
    """A valid-looking gait graph whose sequence axis is fixed at 5 frames."""
    torch.onnx.export(_EmbedForward(_TinyGait().eval()), (torch.rand(1, 5, 64, 44),), str(path), dynamo=False,
                      input_names=["sils"], output_names=["embedding"])
    return path


class _EmbedForward(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        return self.inner.embed(sils)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("case,message", [
    ("truncated", "not a loadable ONNX model"),
    ("text", "not a loadable ONNX model"),
    ("missing", "not found"),
    ("detector", "the gait stage feeds"),  # YOLOX: rank 4 in, rank 3 out, but [1, 3, 416, 416]
    ("segmenter", "expected rank 4"),  # PP-HumanSeg: rank-4 output
    ("fixed_length", "fixed sequence length"),
])
def test_onnx_embedder_refuses_wrong_files(exported, shared, tmp_path, case, message):
    path = tmp_path / f"{case}.onnx"
    if case == "truncated":
        path.write_bytes(exported.read_bytes()[: exported.stat().st_size // 3])
    elif case == "text":
        path.write_text("not a model\n")
    elif case == "detector":
        path = shared / "weights" / "yolox_nano.onnx"
    elif case == "segmenter":
        path = shared / "weights" / "pphumanseg_onnx_model.onnx"
    elif case == "fixed_length":
        _fixed_length_model(path)
    with pytest.raises(UserError, match=message) as info:
        OnnxGaitEmbedder(GaitConfig(model=str(path)))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_onnx_embedder_rejects_bad_settings_and_input(exported):
    with pytest.raises(UserError, match="max_frames"):
        OnnxGaitEmbedder(GaitConfig(model=str(exported), max_frames=0))
    stage = OnnxGaitEmbedder(GaitConfig(model=str(exported)))
    with pytest.raises(ValueError, match="non-empty"):
        stage([np.zeros((0, 64, 64), np.uint8)])
    assert stage([]) == []
    assert os.fspath(stage.path) == str(exported)
    # export_onnx without metadata: architecture unknown, OpenGait's default metric
    assert (stage.arch, stage.metric, stage.embedding_shape) == ("unknown", "euc", (256, 16))


def test_export_records_its_checkpoint_and_a_gallery_of_either_accepts_the_other(ckpt, tmp_path, capsys):
    """A gallery enrolled with the checkpoint accepts the checkpoint's own export (same weights: embeddings equal
    to ~1e-6) and refuses another model's; one enrolled with the export (under the checkpoint's sha256, as enroll
    records it) accepts the checkpoint."""
    from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
    from allinone.gait.onnx import source_sha256
    from allinone.io.run_folder import sha256_path
    from allinone.records import Embedding, TrackResult
    out = tmp_path / "gait.onnx"
    assert export_command(["--gait-model", str(ckpt), "--out", str(out)]) == 0
    capsys.readouterr()
    ckpt_sha, onnx_sha = sha256_path(ckpt), sha256_path(out)
    assert ckpt_sha != onnx_sha
    stage = OnnxGaitEmbedder(GaitConfig(model=str(out)))
    assert stage.source_sha256 == source_sha256(out) == ckpt_sha
    feat = np.zeros((256, 16), np.float32)
    track = TrackResult(1, 0, 9, 10, 10, {}, Embedding("v", 1, feat, 10, 0, 9))
    with GalleryStore(tmp_path / "g.sqlite", create=True) as store:
        store.add([Enrolment("Ann", "a.mp4", [track])], ModelInfo(ckpt_sha, str(ckpt), "gaitbase", "euc"))
        store.check_model(ModelInfo(onnx_sha, str(out), stage.arch, "euc", source_sha256=stage.source_sha256))  # accepted
        with pytest.raises(UserError, match="another gait checkpoint"):
            store.check_model(ModelInfo(onnx_sha, str(out), stage.arch, "euc", source_sha256="ef" * 32))  # another model's
        with pytest.raises(UserError, match="another gait checkpoint"):
            store.check_model(ModelInfo(onnx_sha, str(out), stage.arch, "euc"))  # an export that names no source
    with GalleryStore(tmp_path / "h.sqlite", create=True) as store:  # enrolled with the export
        store.add([Enrolment("Ann", "a.mp4", [track])],
                  ModelInfo(stage.source_sha256, str(out), "gaitbase", "euc", source_sha256=stage.source_sha256))
        store.check_model(ModelInfo(ckpt_sha, str(ckpt), "gaitbase", "euc"))  # the checkpoint: accepted
