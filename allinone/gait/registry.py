"""The gait architectures we can run (OpenGait's, and GaitGraph over keypoints), what each expects and returns, and how to tell them apart by keys.

Every model class named here has ``embed(sils [n, s, 64, 44]) -> [n, c, p]`` (OpenGait's inference embedding;
SkeletonGait++ takes [n, s, 3, 64, 44], skeleton maps beside the silhouette: see ``channels``),
``embedding_shape -> (c, p)`` and ``kwargs_from_state(state_dict) -> constructor kwargs``. Importing this module
does not import torch; :func:`build` imports the model module on use.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """One OpenGait architecture (all facts read from OpenGait's model code and configs)."""

    name: str  # our name, used for GaitConfig.arch
    title: str  # OpenGait's class name
    module: str  # where the class lives, relative to this package
    markers: tuple[str, ...]  # state_dict keys that all occur in this architecture and in no other one here
    embedding: str  # the inference embedding and its shape
    configs: str  # OpenGait configs whose checkpoints load
    short_sequences: str  # what happens with few frames
    # Evaluator input: aligned 64x64 silhouettes, `cutting` columns cut from each side (BaseSilCuttingTransform,
    # OpenGait's default evaluator transform, which none of these configs overrides), divided by 255.
    input_size: tuple[int, int] = (64, 44)
    cutting: int = 10
    # evaluator_cfg.metric of the configs (or default.yaml's when unset): mean over parts of euclidean distances.
    metric: str = "euc"
    # input planes per frame: 1 (the silhouette) or 3 (limb map, joint map, silhouette: needs keypoints, see
    # skeleton_maps.skeleton_maps and skeleton_input)
    channels: int = 1
    # What a track gives the model: aligned silhouettes, or 2-D keypoints from the pose stage (gait/skeleton.py).
    input: str = "silhouettes"

    def model_class(self) -> type:
        return getattr(import_module(self.module, __package__), self.title)


ARCHS: dict[str, ArchSpec] = {s.name: s for s in (
    ArchSpec(
        name="gaitbase", title="GaitBase", module=".gaitbase",
        markers=("Backbone.forward_block.conv1.conv.weight", "Backbone.forward_block.layer1.0.conv1.weight"),
        embedding="[256, 16]: FCs output (embed_1)",
        configs="configs/gaitbase/* (class_num from BNNecks.fc_bin)",
        short_sequences="any length >= 1 (temporal max)"),
    ArchSpec(
        name="gaitset", title="GaitSet", module=".gaitset",
        markers=("set_block1.forward_block.0.conv.weight", "gl_block2.0.conv.weight"),
        embedding="[out, 62]: Head output; out = 256 in the CASIA-B/GREW/OUMVLP configs",
        configs="configs/gaitset/* (widths from the conv and Head shapes)",
        short_sequences="any length >= 1 (set max pooling)"),
    ArchSpec(
        name="gaitpart", title="GaitPart", module=".gaitpart",
        markers=("Backbone.forward_block.feature.0.conv.weight", "TFA.pooling_func.conv1d3x1.0.0.conv.weight"),
        embedding="[out, 16]: Head output; out = 128 (CASIA-B) or 256 (GREW/OUMVLP/CASIA-E)",
        configs="gaitpart.yaml (CASIA-B), gaitpart_GREW/_OUMVLP/_casiae (layer list rebuilt from keys)",
        short_sequences="any length >= 1 (templates pad in time)"),
    ArchSpec(
        name="gaitgl", title="GaitGL", module=".gaitgl",
        markers=("conv3d.0.conv3d.weight", "LTA.0.conv3d.weight", "HPP.p"),
        embedding="[c, 64]: BN head output (bnft); c = 128 (CASIA-B) or 256 (GREW/OUMVLP); "
                  "L2-normalised per part with the BNNeck head",
        configs="gaitgl.yaml (CASIA-B), gaitgl_GREW, gaitgl_GREW_BNNeck, gaitgl_OUMVLP",
        short_sequences="1 or 2 frames are tiled to 3 or 4 as OpenGait does; the stride-3 temporal conv drops "
                        "the last s mod 3 frames"),
    ArchSpec(
        name="deepgaitv2", title="DeepGaitV2", module=".deepgaitv2",
        markers=("layer0.forward_block.0.weight", "FCs.fc_bin", "BNNecks.fc_bin"),
        embedding="[256, 16]: FCs output (embed_1)",
        configs="configs/deepgaitv2/* (p3d; 2d and 3d modes too; depths/widths from keys)",
        short_sequences="any length >= 1 (temporal convs pad one frame)"),
    ArchSpec(
        name="skeletongait++", title="SkeletonGaitPP", module=".skeletongait",
        markers=("sil_layer0.forward_block.0.weight", "map_layer0.forward_block.0.weight",
                 "fusion.conv.forward_block.0.weight"),
        embedding="[256, 16]: FCs output (embed_1; no released config sets use_emb2)",
        configs="configs/skeletongait/skeletongait++_* (GREW, Gait3D, CCPG, SUSTech1K; depths/width from keys)",
        short_sequences="any length >= 1 (temporal convs pad one frame)",
        channels=3),
    ArchSpec(
        name="gaitgraph", title="GaitGraph", module=".gaitgraph",
        markers=("input_branches.0.bn.running_mean", "main_stream.0.scn.conv.gcn.weight", "fcn.weight"),
        embedding="[128, 1]: the L2-normalised fcn output (tteepe/GaitGraph ResGCN-N39-R8), mean over windows",
        configs="tteepe/GaitGraph release v0.1 (resgcn-n39-r8, coco, 60 frames); not an OpenGait model",
        short_sequences="60-frame windows every 30 frames; a shorter track is one window of its length",
        input_size=(17, 3), cutting=0, input="keypoints"),
)}


def matching_archs(keys: Iterable[str]) -> list[str]:
    """Names of the architectures all of whose marker keys are among ``keys``."""
    have = set(keys)
    return [name for name, spec in ARCHS.items() if all(m in have for m in spec.markers)]


def build(spec: ArchSpec, state: Mapping[str, "object"]) -> "nn.Module":
    """An untrained model of ``spec`` shaped like ``state`` (ValueError with a reason when shapes are unreadable)."""
    cls = spec.model_class()
    return cls(**cls.kwargs_from_state(state))
