"""SkeletonGait++ (Fan et al., "SkeletonGait: Gait Recognition Using Skeleton Maps", AAAI 2024) as OpenGait builds
it (opengait/modeling/models/skeletongait++.py, class SkeletonGaitPP).

Two stems see the same frames: one the silhouette, one the two skeleton maps (limbs, joints; skeleton_maps.py).
After one 2-D residual stage each, an attention fusion mixes them per channel and pixel, and DeepGaitV2's pseudo-3D
stages, temporal max, 16-band pooling and per-part FCs follow. Released configs (configs/skeletongait/
skeletongait++_*.yaml): C = 2 (widths 64-128-256-512), blocks [1, 4, 4, 1] (GREW, Gait3D) or [1, 1, 1, 1] (CCPG,
SUSTech1K); none sets use_emb2, so the embedding is ``embed_1``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from allinone.gait.blocks import PerFrame, block_indices, fc_embedding_shape, horizontal_pool, shape_of
from allinone.gait.deepgaitv2 import Block2D, conv3x3, residual_stage
from allinone.gait.gaitbase import SeparateBNNecks, SeparateFCs

PARTS = 16
MAP_CHANNELS = 2  # limb map, joint map
WIDTHS = (44, 48, 88, 96)  # input widths OpenGait's forward accepts (its assert)


class AttentionFusion(nn.Module):
    """OpenGait's AttentionFusion: a per-frame bottleneck on both features side by side gives two scores per
    channel and pixel; their softmax weighs silhouette against map. [n, c, s, h, w] twice → [n, c, s, h, w]."""

    def __init__(self, channels: int, squeeze: int = 16) -> None:
        super().__init__()
        hidden = int(channels / squeeze)
        if hidden < 1:
            raise ValueError(f"AttentionFusion needs at least {squeeze} channels, got {channels}")
        self.conv = PerFrame(nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            conv3x3(hidden, hidden), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2 * channels, 1, bias=False)))

    def forward(self, sil: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        n, c, s, h, w = sil.shape
        score = self.conv(torch.cat([sil, maps], dim=1)).reshape(n, 2, c, s, h, w).softmax(dim=1)
        return sil * score[:, 0] + maps * score[:, 1]


def _stem(c_in: int, c_out: int, blocks: int) -> tuple[nn.Module, nn.Module]:
    """conv3x3 + BN + ReLU (layer 0) and ``blocks`` 2-D basic blocks (layer 1), both per frame."""
    layer0 = PerFrame(nn.Sequential(conv3x3(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)))
    layer1 = PerFrame(nn.Sequential(*[Block2D(c_out, c_out, 1, None) for _ in range(blocks)]))
    return layer0, layer1


class SkeletonGaitPP(nn.Module):
    """x [n, s, 3, 64, 44] (channels: limb map, joint map, silhouette; each /255) → embed [n, 4 * base, 16].

    ``base`` is OpenGait's 32 * C (64 in the released configs); stage widths base, 2, 4, 8 x base. Shapes for
    base 64: stems [n, 64, s, 64, 44] → fusion → [n, 128, s, 32, 22] → [n, 256, s, 16, 11] → [n, 512, s, 16, 11]
    → temporal max → HPP [n, 512, 16] → FCs [n, 256, 16] (``embed_1``). Any s >= 1.
    """

    def __init__(self, class_num: int, blocks: Sequence[int] = (1, 4, 4, 1), base: int = 64) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"SkeletonGaitPP needs four stage depths >= 1, got {tuple(blocks)}")
        c = (base, 2 * base, 4 * base, 8 * base)
        self.sil_layer0, self.sil_layer1 = _stem(1, c[0], blocks[0])
        self.map_layer0, self.map_layer1 = _stem(MAP_CHANNELS, c[0], blocks[0])
        self.fusion = AttentionFusion(c[0])
        self.layer2 = residual_stage("p3d", c[0], c[1], 2, blocks[1])
        self.layer3 = residual_stage("p3d", c[1], c[2], 2, blocks[2])
        self.layer4 = residual_stage("p3d", c[2], c[3], 1, blocks[3])
        self.FCs = SeparateFCs(PARTS, c[3], c[2])
        self.BNNecks = SeparateBNNecks(PARTS, c[2], class_num)

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return fc_embedding_shape(self.FCs.fc_bin)

    @staticmethod
    def kwargs_from_state(state: Mapping[str, torch.Tensor]) -> dict:
        """Constructor arguments from an OpenGait SkeletonGaitPP state_dict: base width from the silhouette stem,
        stage depths from the block indices, class_num from BNNecks.fc_bin."""
        base, c_in = shape_of(state, "sil_layer0.forward_block.0.weight", 4)[:2]
        maps_in = shape_of(state, "map_layer0.forward_block.0.weight", 4)[1]
        if (c_in, maps_in) != (1, MAP_CHANNELS):
            raise ValueError(f"stems take {c_in} and {maps_in} channels, OpenGait's take 1 and {MAP_CHANNELS}")
        blocks = [len(block_indices(state, "sil_layer1.forward_block."))]
        blocks += [len(block_indices(state, f"layer{i}.")) for i in (2, 3, 4)]
        if min(blocks) < 1:
            raise ValueError(f"a stage without blocks (depths {blocks})")
        return {"class_num": shape_of(state, "BNNecks.fc_bin", 3)[2], "blocks": tuple(blocks), "base": base}

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, s, 3, h, w] → HPP of the temporal max of stage 4, [n, 8 * base, 16]."""
        if x.dim() != 5 or x.shape[2] != MAP_CHANNELS + 1:
            raise ValueError(f"SkeletonGaitPP takes [n, s, 3, h, w] (limb map, joint map, silhouette), "
                             f"got {tuple(x.shape)}")
        if x.shape[-1] not in WIDTHS:
            raise ValueError(f"SkeletonGaitPP takes inputs {WIDTHS} wide (OpenGait's assert), got {x.shape[-1]}")
        x = x.transpose(1, 2)  # [n, 3, s, h, w]
        maps = self.map_layer1(self.map_layer0(x[:, :MAP_CHANNELS]))
        sils = self.sil_layer1(self.sil_layer0(x[:, -1:]))
        x = self.layer4(self.layer3(self.layer2(self.fusion(sils, maps))))
        return horizontal_pool(x.amax(2), (PARTS,))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, s, 3, h, w] → [n, 4 * base, 16] (``embed_1``, the FCs output)."""
        return self.FCs(self._pooled(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x [n, s, 3, h, w] → {'embed': [n, 4 * base, 16], 'logits': [n, class_num, 16]}."""
        embed = self.FCs(self._pooled(x))
        return {"embed": embed, "logits": self.BNNecks(embed)[1]}
