"""ONNX export of a gait model's inference embedding, and an ONNX Runtime backend for the gait stage.

Export uses torch's TorchScript (tracing) exporter: with frame chunking out of the way, GaitBase's ``embed``
has no Python control flow that depends on the sequence length, so the traced graph is shape-generic (n and s
are read with Shape ops at run time) and is written at the requested opset as is. Tracing freezes any such
control flow silently, so every export is checked against torch on other batch sizes and lengths (one frame
included) before the file is put in place.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from allinone.gait.inputs import gait_input
from allinone.config import GaitConfig
from allinone.errors import UserError, first_line, shorten
from allinone.io.run_folder import temp_beside

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_NAME = "sils"
OUTPUT_NAME = "embedding"
# Opsets the TorchScript exporter writes faithfully (above 20 it warns and writes 20).
MIN_OPSET, MAX_OPSET = 13, 20
# Export parity: max |ort - torch| <= RTOL * max |torch| + ATOL. Float32 runs with different convolution
# kernels (MLAS vs oneDNN) differ by ~5e-7 of the output scale on GaitBase; a broken graph (wrong axis, a
# length baked into the trace) is off by tens of percent.
PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-6
_TRACE_NS = (2, 5)  # [n, s] of the traced example: not 1, so neither axis can be specialised as broadcastable
# [n, s] of the parity checks: lengths other than the traced one, and s = 1 (where models branch on short input)
_CHECK_NS = ((1, 11), (2, 3), (1, 1))
# frame_chunk while tracing: every sequence fits one chunk, so a chunk loop runs once over an open-ended slice
_NO_CHUNKING = 1 << 30
# ONNX metadata keys written by export_command and read by OnnxGaitEmbedder
META_ARCH, META_METRIC = "allinone.arch", "allinone.metric"
# the sha256 of the checkpoint the graph was exported from: a gallery enrolled with that checkpoint accepts the export
META_SOURCE = "allinone.source_sha256"


class ExportMismatchError(RuntimeError):
    """The exported graph does not compute what the torch model computes (e.g. control flow frozen by tracing)."""


def _embed_only(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap ``model.embed`` as the module's forward, for the exporter."""
    from torch import nn

    class EmbedOnly(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, sils: torch.Tensor) -> torch.Tensor:
            """sils: [n, s, h, w] → embedding [n, c, p]."""
            return self.inner.embed(sils)

    return EmbedOnly(model).eval()


def _parity_error(model: torch.nn.Module, onnx_path: Path, input_hw: tuple[int, int],
                  measured: dict | None = None) -> str | None:
    """Run torch and ONNX Runtime (CPU) on random sequences; a description of the first mismatch, or None.
    ``measured`` receives the largest difference seen (``max_abs``) and the output scale there (``scale``)."""
    import onnxruntime as ort
    import torch

    from allinone.io.devices import ort_session_options

    options = ort_session_options()
    options.log_severity_level = 4  # a failing run is reported in our error; keep ORT's own log line out
    sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for n, s in _CHECK_NS:
        x = torch.rand(n, s, *input_hw, generator=gen)
        with torch.inference_mode():
            ref = model.embed(x).numpy()
        try:
            got = sess.run(None, {INPUT_NAME: x.numpy()})[0]
        except Exception as exc:  # ORT's own Exception subclasses, e.g. an index baked into the trace
            return f"[n={n}, s={s}]: ONNX Runtime failed ({str(exc).strip()[:200]})"
        if got.shape != ref.shape:
            return f"[n={n}, s={s}]: ONNX output shape {got.shape} != torch {ref.shape}"
        err = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max())
        log.debug("export parity [n=%d, s=%d]: max abs %.3g, output scale %.3g", n, s, err, scale)
        if measured is not None and not err <= measured.get("max_abs", -1.0):
            measured.update(max_abs=err, scale=scale, checks=[list(ns) for ns in _CHECK_NS])
        if not err <= PARITY_RTOL * scale + PARITY_ATOL:  # also catches NaN
            return f"[n={n}, s={s}]: max |onnx - torch| = {err:.3g} at output scale {scale:.3g}"
    return None


def export_onnx(model: torch.nn.Module, out: Path, input_hw: tuple[int, int] = (64, 44), opset: int = 17, *,
                metadata: Mapping[str, str] | None = None, measured: dict | None = None) -> Path:
    """Export ``model.embed`` (sils [n, s, h, w] float32 → embedding [n, c, p]) to ``out`` as ONNX.

    n and s are dynamic. The model is copied to CPU in eval mode (the caller's model is left as it is), with
    any ``frame_chunk`` raised above every sequence length (a chunk loop would be unrolled for the traced
    length). ``metadata`` goes into the model's metadata_props. The file is written beside ``out`` under a
    temporary name, checked against torch with ONNX Runtime, then renamed to ``out``.
    Raises ExportMismatchError when the ONNX outputs differ from torch's beyond PARITY_RTOL / PARITY_ATOL.
    ``measured`` (a dict) receives the largest difference the checks found (``max_abs``, ``scale``).
    """
    import torch

    if not callable(getattr(model, "embed", None)):
        raise TypeError(f"{type(model).__name__} has no embed() method to export")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if importlib.util.find_spec("onnx") is None:
        raise UserError("ONNX export needs the 'onnx' package (pip install onnx)")
    out = Path(out)
    cpu_model = copy.deepcopy(model).cpu().eval()
    if hasattr(cpu_model, "frame_chunk"):
        cpu_model.frame_chunk = _NO_CHUNKING
    wrapper = _embed_only(cpu_model)
    example = torch.rand(*_TRACE_NS, *input_hw)

    out.parent.mkdir(parents=True, exist_ok=True)
    # A unique name beside `out` (same file system, so the rename is atomic); created by the exporter itself so
    # that it gets the usual permissions (mkstemp would leave it readable by its owner only).
    tmp = temp_beside(out)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo; it is chosen here on purpose.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            # Python values frozen by the trace (a chunking branch, a shape check) are expected; the parity
            # checks below decide whether any of them changes the result.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "n", 1: "s"}, OUTPUT_NAME: {0: "n"}})
        if metadata:
            import onnx

            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, dict(metadata))
            onnx.save(proto, str(tmp))
        problem = _parity_error(cpu_model, tmp, input_hw, measured)
        if problem:
            raise ExportMismatchError(f"ONNX export of {type(model).__name__} does not match torch {problem}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s embedding to %s (opset %d)", type(model).__name__, out, opset)
    return out


def source_sha256(path: str | Path) -> str:
    """The sha256 of the checkpoint an ONNX file written by export-onnx came from ('' when it does not say)."""
    import onnxruntime as ort
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # not loadable: the gait stage reports that with its own message
        return ""
    return sess.get_modelmeta().custom_metadata_map.get(META_SOURCE, "")


def _is_fixed(dim: object) -> bool:
    """An ONNX Runtime shape entry is an int when fixed, a str or None when dynamic."""
    return isinstance(dim, int)


class OnnxGaitEmbedder:
    """The gait stage on ONNX Runtime: a model written by export_onnx (or any graph with the same contract:
    one float input [n, s, 64, 44] with a dynamic s, one float output [n, c, p]).

    Like GaitEmbedder it has ``arch`` and ``metric`` (from the export's metadata; 'unknown' and OpenGait's
    'euc' for graphs without it) and ``embedding_shape`` (c, p) (None where the graph leaves them dynamic).
    """

    def __init__(self, config: GaitConfig, device: str = "cpu") -> None:
        import onnxruntime as ort

        from allinone.io.devices import onnx_providers, ort_session_options

        if not config.model:
            raise UserError("no gait model given (an OpenGait .pt checkpoint or an exported .onnx file)")
        if config.max_frames < 1:
            raise UserError(f"gait max_frames must be at least 1, got {config.max_frames}")
        path = Path(config.model)
        if not path.is_file():
            raise UserError("ONNX gait model not found (not a file)", path)
        self.config = config
        self.path = path
        providers = onnx_providers(device)
        options = ort_session_options()
        # No busy-waiting between runs: one long run per track gains nothing from it, and spinning ORT threads
        # starve torch's in the same process (120 frames on 2 cores: torch 1.1 s → 5.6 s, ORT 0.86 → 1.7 s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own Exception subclasses (InvalidProtobuf, InvalidGraph, Fail...)
            raise UserError(f"not a loadable ONNX model ({shorten(first_line(exc), 160)})", path) from exc
        self._check_contract()
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.arch = meta.get(META_ARCH, "unknown")
        self.metric = meta.get(META_METRIC, "euc")
        self.source_sha256 = meta.get(META_SOURCE, "")  # the checkpoint it was exported from ('' unknown)
        wanted = getattr(config, "arch", "auto")
        if wanted != "auto" and self.arch == "unknown":
            log.warning("%s has no architecture metadata; cannot check that it is %s", path, wanted)
        elif wanted != "auto" and self.arch != wanted:
            raise UserError(f"exported from a {self.arch} model, not {wanted} (architecture {wanted!r} was asked "
                            "for)", path)
        # export_onnx exports the model's embed (embed_1, the FCs output); an embed_2 run needs the .pt checkpoint
        self.embedding = "embed_1"
        if getattr(config, "embedding", "auto") == "embed_2":
            raise UserError("an exported graph gives embed_1 (the FCs output); for embed_2 use the .pt checkpoint",
                            path)
        c, p = self.session.get_outputs()[0].shape[1:]
        self.embedding_shape: tuple[int, int] | None = (c, p) if _is_fixed(c) and _is_fixed(p) else None
        if device == "cuda" and config.fp16:
            log.info("gait fp16 does not apply to the ONNX backend (the graph is float32)")
        log.info("loaded ONNX gait model %s (providers %s)", path, ", ".join(self.session.get_providers()))

    def _check_contract(self) -> None:
        """Refuse graphs that cannot take [1, s, 64, 44] float32 for every s or do not give [1, c, p]."""
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise UserError(f"not a gait embedding model: {len(ins)} inputs and {len(outs)} outputs "
                            "(expected 1 and 1)", self.path)
        i, o = ins[0], outs[0]
        if len(i.shape) != 4 or len(o.shape) != 3:
            raise UserError(f"not a gait embedding model: input {i.name!r} {i.shape}, output {o.name!r} {o.shape} "
                            "(expected rank 4 [n, s, 64, 44] and rank 3 [n, c, p])", self.path)
        if i.type != "tensor(float)" or o.type != "tensor(float)":
            raise UserError(f"not a float32 gait model: input {i.type}, output {o.type}", self.path)
        n, s, h, w = i.shape
        hw_ok = all(not _is_fixed(d) or d == want for d, want in ((h, 64), (w, 44)))
        if not hw_ok or (_is_fixed(n) and n != 1):
            raise UserError(f"input {i.name!r} is {i.shape}; the gait stage feeds [1, s, 64, 44]", self.path)
        if _is_fixed(s):
            raise UserError(f"input {i.name!r} has a fixed sequence length of {s} frames; export it with a dynamic "
                            "sequence axis (python main.py export-onnx)", self.path)

    def __call__(self, aligned: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
        """aligned: sequences of uint8 [T, 64, 64] (T >= 1) → float32 [c, p] embeddings, one per sequence
        (one run per sequence: ``batch`` is accepted for the GaitBackend interface)."""
        out: list[np.ndarray] = []
        for seq in aligned:
            x = gait_input(seq, self.config.max_frames)[None]  # [1, s, 64, 44]
            emb = self.session.run(None, {self.input_name: x})[0]  # [1, c, p]
            out.append(np.asarray(emb[0], dtype=np.float32))
        return out
