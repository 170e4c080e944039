"""Loading OpenGait checkpoints (GaitBase, GaitSet, GaitPart, GaitGL, DeepGaitV2, SkeletonGait++) and the gait
embedding stage.

OpenGait saves ``{'model': state_dict, 'optimizer': ..., 'scheduler': ..., 'iteration': int}`` with torch.save;
those files load with ``weights_only=True``. The architecture is read from the state_dict keys (registry.py) or
forced by name; either way the keys and shapes must be exactly those of the OpenGait model.
"""
from __future__ import annotations

import contextlib
import logging
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from allinone.gait.inputs import gait_input
from allinone.config import GaitConfig
from allinone.errors import UserError, shorten
from allinone.gait.registry import ARCHS, ArchSpec, build, matching_archs
from allinone.io.safe_pickle import pickle_globals

if TYPE_CHECKING:
    import torch
    from torch import nn

    from allinone.gait.gaitbase import GaitBase

log = logging.getLogger(__name__)

_SHOW = 3  # key names quoted in an error message
# what a checkpoint of tensors pickles: torch's tensor and storage rebuilders, ordered dicts, numpy's arrays
_TENSOR_MODULES = ("torch.", "collections.OrderedDict", "numpy.", "_codecs.encode", "builtins.set")


def _read_state_dict(path: Path, trust_pickle: bool = False) -> dict[str, "torch.Tensor"]:
    """The model state_dict inside an OpenGait checkpoint (or a bare state_dict), 'module.' prefixes removed.

    The file is read with ``torch.load(weights_only=True)``, which runs no code from the file. A checkpoint that
    also pickles other objects (a config object, a custom class) is refused unless ``trust_pickle`` is set: then
    it is unpickled in full, which can run code from the file.
    """
    import torch

    if path.is_dir():
        raise UserError("is a directory, not a gait checkpoint file", path)
    if not path.is_file():
        raise UserError("gait checkpoint not found", path)
    try:
        try:
            with warnings.catch_warnings():  # torch's note on a pickle protocol it did not expect
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's words for what it refused change between versions: the file's own globals say whether it
            # pickles objects besides tensors (read without running them) or is not a torch pickle at all
            foreign = [g for g in pickle_globals(path) if not g.startswith(_TENSOR_MODULES)]
            if not foreign:
                raise
            keypoint_model = None if trust_pickle else _keypoint_model_tensors(path)
            if keypoint_model is not None:
                return keypoint_model
            if not trust_pickle:
                raise UserError(f"refused: it pickles objects other than tensors ({', '.join(foreign[:_SHOW])}), "
                                "which could run code when loaded; if you trust its source, pass "
                                "--trust-checkpoint", path) from exc
            log.warning("%s pickles objects besides tensors; unpickling it in full as asked (--trust-checkpoint)",
                        path)
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except UserError:
        raise
    except pickle.UnpicklingError as exc:
        raise UserError("not a loadable checkpoint: not a torch file (unpickling failed)", path) from exc
    except Exception as exc:  # torch.load fails on foreign or cut-off bytes in many ways (EOF, zip, key errors)
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {shorten(lines[0], 120)}" if lines else type(exc).__name__
        raise UserError(f"not a readable PyTorch checkpoint (truncated or another format; {reason})", path) from exc
    if not isinstance(obj, Mapping):
        raise UserError(f"not an OpenGait checkpoint: holds a {type(obj).__name__}, expected a dict", path)
    if "model" in obj:
        state = obj["model"]
        if not isinstance(state, Mapping):
            raise UserError(f"its 'model' entry is a {type(state).__name__}, not a state dict", path)
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a bare state_dict
    else:
        keys = ", ".join(map(str, list(obj)[:5]))
        raise UserError(f"not an OpenGait checkpoint: no 'model' state dict (top-level keys: {keys})", path)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"state dict has non-tensor entries, e.g. {bad[:_SHOW]}", path)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _keypoint_model_tensors(path: Path) -> dict[str, "torch.Tensor"] | None:
    """A keypoint model's (GaitGraph's) state_dict from a checkpoint that also pickles its training script's
    objects: only the 'model' tensors are read, by an unpickler that runs none of the file's code
    (io/safe_pickle.py). None when the file's 'model' is not a keypoint model's (it is then refused as before)."""
    from allinone.io.safe_pickle import read_tensors
    try:
        state, skipped = read_tensors(path, "model")
    except ValueError:
        return None
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    found = matching_archs(state)
    if len(found) != 1 or ARCHS[found[0]].input != "keypoints":
        return None
    log.info("%s: read its 'model' tensors only; its other entries were not unpickled (%s)", path,
             ", ".join(sorted(skipped)) or "none")
    return state


def _pick_arch(state: Mapping[str, "torch.Tensor"], arch: str, path: Path) -> ArchSpec:
    """The spec of ``arch``, or of the one architecture the keys identify when ``arch`` is 'auto'."""
    found = matching_archs(state)
    names = ", ".join(ARCHS)
    if arch == "auto":
        if len(found) == 1:
            return ARCHS[found[0]]
        if found:
            raise UserError(f"ambiguous gait checkpoint: its keys fit {' and '.join(found)}; set the architecture",
                            path)
        sample = ", ".join(list(state)[:_SHOW])
        raise UserError(f"not a checkpoint of a known OpenGait model ({names}): its keys match none "
                        f"(first keys: {sample})", path)
    if arch not in ARCHS:
        raise UserError(f"unknown gait architecture {arch!r} (expected auto, {names})")
    if found and arch not in found:
        raise UserError(f"a {ARCHS[found[0]].title} checkpoint, not {ARCHS[arch].title} "
                        f"(architecture {arch!r} was asked for)", path)
    return ARCHS[arch]


def load_gait_model(path: str | Path, arch: str = "auto", device: str = "cpu", *,
                    trust_pickle: bool = False) -> tuple["nn.Module", ArchSpec]:
    """An OpenGait checkpoint → (model in eval mode on ``device``, its ArchSpec).

    ``arch``: 'auto' (recognised from the keys) or one of registry.ARCHS. Constructor arguments (class_num,
    widths, depths) are read from the tensor shapes; the key set and every shape must then equal the model's.
    ``trust_pickle``: also load checkpoints that need full unpickling (see _read_state_dict).
    """
    path = Path(path)
    state = _read_state_dict(path, trust_pickle)
    spec = _pick_arch(state, arch, path)
    title = spec.title
    try:
        model = build(spec, state)
    except ValueError as exc:
        raise UserError(f"not a {title} checkpoint: {exc}", path) from exc
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:_SHOW])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:_SHOW])})")
        raise UserError(f"not a {title} checkpoint: keys differ from OpenGait's {title}: " + "; ".join(parts), path)
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise UserError(f"not a {title} checkpoint: {len(wrong)} tensors have the wrong shape "
                        f"(e.g. {'; '.join(wrong[:_SHOW])})", path)
    model.load_state_dict(state, strict=True)
    log.info("loaded %s from %s (embedding %s, metric %s)", title, path, model.embedding_shape, spec.metric)
    return model.to(device).eval(), spec


def load_gaitbase(path: str | Path, device: str = "cpu") -> "GaitBase":
    """An OpenGait GaitBase checkpoint → GaitBase in eval mode on ``device``; class_num from BNNecks.fc_bin."""
    return load_gait_model(path, "gaitbase", device)[0]  # type: ignore[return-value]


def save_gaitbase_checkpoint(model: "GaitBase", path: str | Path, iteration: int = 0) -> Path:
    """Write ``model`` as OpenGait does: {'model', 'optimizer', 'scheduler', 'iteration'}.

    The optimizer and scheduler entries are the fresh state of GaitBase's training setup (SGD lr 0.1, momentum
    0.9, weight decay 5e-4; MultiStepLR as in the GREW config), so OpenGait can also resume from the file.
    """
    import torch

    path = Path(path)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[80000, 120000, 150000], gamma=0.1)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "iteration": int(iteration)}, path)
    return path


EMBEDDINGS = ("auto", "embed_1", "embed_2")
# the OpenGait classes here that read use_emb2 (models/deepgaitv2.py:30, models/skeletongait++.py:17)
EMB2_ARCHS = ("deepgaitv2", "skeletongait++")
# The released configs that set use_emb2 (OpenGait at 0efafd4, configs/**): only skeletongait/skeletongait_CCPG.yaml,
# model DeepGaitV2 with Backbone in_channels 2 and SeparateBNNecks class_num 100 (CCPG's training ids). No
# skeletongait++_*.yaml sets it, so SkeletonGaitPP checkpoints get embed_1 on auto.
USE_EMB2_CONFIGS = ({"arch": "deepgaitv2", "in_channels": 2, "class_num": 100},)


def resolve_embedding(requested: str, spec: ArchSpec, kwargs: Mapping, path: Path | str = "") -> str:
    """embed_1 or embed_2 for a checkpoint: as asked (embed_2 only where OpenGait's class can return it), or for
    auto what OpenGait's released config with this architecture and shapes sets (USE_EMB2_CONFIGS), else
    embed_1 (use_emb2 defaults to False where it is read)."""
    if requested not in EMBEDDINGS:
        raise UserError(f"unknown embedding {requested!r} (expected {', '.join(EMBEDDINGS)})")
    if requested == "embed_2" and spec.name not in EMB2_ARCHS:
        raise UserError(f"OpenGait's {spec.title} has no embed_2 option (use_emb2 is read by DeepGaitV2 and "
                        "SkeletonGaitPP only): use embed_1 or auto", path or None)
    if requested != "auto":
        return requested
    for cfg in USE_EMB2_CONFIGS:
        if cfg["arch"] == spec.name and all(kwargs.get(k) == v for k, v in cfg.items() if k != "arch"):
            return "embed_2"
    return "embed_1"


class GaitEmbedder:
    """The gait stage: aligned silhouette sequences → OpenGait embeddings, one forward per sequence.

    ``arch``, ``spec`` (input size, metric, embedding), ``metric`` (pass it to the Matcher) and
    ``embedding_shape`` (c, p) describe the loaded model.
    """

    def __init__(self, config: GaitConfig, device: str = "cpu", loaded: tuple["nn.Module", ArchSpec] | None = None
                 ) -> None:
        import torch

        if not config.model:
            raise UserError("no gait checkpoint given (an OpenGait .pt file is needed for the gait stage)")
        if config.max_frames < 1:
            raise UserError(f"gait max_frames must be at least 1, got {config.max_frames}")
        self.config = config
        self.device = device
        self.model, self.spec = loaded or load_gait_model(config.model, config.arch, device,
                                                          trust_pickle=config.trust_checkpoint)
        self.arch = self.spec.name
        self.metric = self.spec.metric
        kwargs = {}
        if hasattr(self.model, "BNNecks"):
            kwargs["class_num"] = int(self.model.BNNecks.fc_bin.shape[-1])
        first = next((m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d)), None)
        kwargs["in_channels"] = first.in_channels if first is not None else None
        self.embedding = resolve_embedding(config.embedding, self.spec, kwargs, config.model)
        if self.embedding != "embed_1":
            log.info("%s: the %s embedding (%s)", config.model, self.embedding,
                     "as asked" if config.embedding != "auto" else "as OpenGait's released config sets use_emb2")
        self.embedding_shape: tuple[int, int] = self.model.embedding_shape
        if device.startswith("cuda") and hasattr(self.model, "frame_chunk"):
            self.model.frame_chunk = 512  # GPUs want big batches; 512 frames of activations fit easily
        self.autocast = device.startswith("cuda") and config.fp16

    def __call__(self, aligned: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
        """aligned: sequences of uint8 [T, 64, 64] (or already cut [T, 64, 44]), T >= 1 → float32 [c, p]
        embeddings, one per sequence ([256, 16] for GaitBase; see ``embedding_shape``). Models with
        ``spec.channels`` 3 (SkeletonGait++) take [T, 3, 64, 64] from skeleton_maps.skeleton_input instead.

        batch > 1 runs up to that many sequences of the same length (after the max_frames cut) in one forward;
        in eval mode every model here treats the batch axis independently, so the embeddings are the same.
        """
        import torch

        inputs = [gait_input(seq, self.config.max_frames) for seq in aligned]  # [s, 64, 44] each
        want = ((self.spec.channels,) if self.spec.channels > 1 else ()) + self.spec.input_size
        if self.spec.channels > 1 and any(x.ndim != 4 for x in inputs):
            raise UserError(f"a {self.spec.title} checkpoint takes skeleton maps beside the silhouettes: it needs "
                            "keypoints from a pose model", self.config.model)
        for x, seq in zip(inputs, aligned):
            if x.shape[1:] != want:
                raise ValueError(f"{self.spec.title} takes {want} inputs, got {x.shape[1:]} (from aligned frames "
                                 f"{seq.shape[1:]}; expected {want[:-1] + (64,)} or {want})")
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(len(x), []).append(i)
        out: list[np.ndarray | None] = [None] * len(inputs)
        with torch.inference_mode():
            for idx in groups.values():
                for k in range(0, len(idx), max(1, batch)):
                    part = idx[k:k + max(1, batch)]
                    x = torch.from_numpy(np.stack([inputs[i] for i in part])).to(self.device)  # [n, s, 64, 44]
                    half = torch.autocast("cuda", dtype=torch.float16) if self.autocast else contextlib.nullcontext()
                    with half:
                        emb = self.model.embed(x)  # [n, c, p]: embed_1, the FCs output
                        if self.embedding == "embed_2":  # the BNNeck feature (deepgaitv2.py:117-120)
                            emb = self.model.BNNecks(emb)[0]
                    emb = emb.float().cpu().numpy().astype(np.float32, copy=False)
                    for j, i in enumerate(part):
                        out[i] = np.ascontiguousarray(emb[j])
        return out  # type: ignore[return-value]
