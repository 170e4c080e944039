"""DeepGaitV2 (Fan et al., "Exploring Deep Models for Practical Gait Recognition") as OpenGait builds it
(opengait/modeling/models/deepgaitv2.py with BasicBlock2D / BasicBlockP3D / BasicBlock3D from modules.py).

All released configs (configs/deepgaitv2/*: GREW and Gait3D with layers [1, 4, 4, 1]; CASIA-B, OUMVLP, CCPG,
SUSTech1K with [1, 1, 1, 1]; channels 64-128-256-512) use the pseudo-3D mode ``p3d``; the ``2d`` and ``3d`` modes
of the same code are supported too. Key names per mode (stage i = 2, 3, 4; block j):
  p3d: ``layer{i}.{j}.conv1.forward_block.0.weight``, ``layer{i}.{j}.shortcut3d.weight``, ``layer{i}.{j}.sbn.*``
  2d:  ``layer{i}.forward_block.{j}.conv1.weight``
  3d:  ``layer{i}.{j}.conv1.weight`` (5-D)
plus ``layer0.forward_block.{0,1}.*``, ``layer1.forward_block.{j}.*``, ``FCs.fc_bin``, ``BNNecks.*`` in all.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from allinone.gait.blocks import PerFrame, block_indices, fc_embedding_shape, horizontal_pool, shape_of
from allinone.gait.gaitbase import SeparateBNNecks, SeparateFCs

MODES = ("2d", "p3d", "3d")
PARTS = 16
_STRIDES = (1, 2, 2, 1)  # spatial stride of stages 1-4 (time is never strided)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class Block2D(nn.Module):
    """ResNet basic block on frames: [b, c, h, w] → [b, c', h/stride, w/stride]."""

    def __init__(self, c_in: int, c_out: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class BlockP3D(nn.Module):
    """Pseudo-3D block: per-frame 3x3 conv, plus a (3,1,1) temporal conv branch added residually, then a per-frame
    3x3 conv and the block shortcut. [n, c, s, h, w] → [n, c', s, h/stride, w/stride]."""

    def __init__(self, c_in: int, c_out: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = PerFrame(nn.Sequential(conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out),
                                            nn.ReLU(inplace=True)))
        self.conv2 = PerFrame(nn.Sequential(conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)))
        self.shortcut3d = nn.Conv3d(c_out, c_out, (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False)
        self.sbn = nn.BatchNorm3d(c_out)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.conv2(self.relu(out + self.sbn(self.shortcut3d(out))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Block3D(nn.Module):
    """Full 3-D basic block (3x3x3 convs, spatial stride only): [n, c, s, h, w] → [n, c', s, h/stride, w/stride]."""

    def __init__(self, c_in: int, c_out: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride=(1, stride, stride), padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def residual_stage(mode: str, c_in: int, c_out: int, stride: int, blocks: int) -> nn.Module:
    """One residual stage; the first block carries the stride and, where shapes change, a 1x1 conv + BN shortcut."""
    down: nn.Module | None = None
    if stride > 1 or c_in != c_out:
        if mode == "2d":
            down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            down = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=(1, stride, stride), bias=False),
                                 nn.BatchNorm3d(c_out))
    block = {"2d": Block2D, "p3d": BlockP3D, "3d": Block3D}[mode]
    seq = nn.Sequential(block(c_in, c_out, stride, down), *[block(c_out, c_out, 1, None) for _ in range(blocks - 1)])
    return PerFrame(seq) if mode == "2d" else seq


class DeepGaitV2(nn.Module):
    """Stem conv → stage 1 (2-D blocks) → stages 2-4 (2d / p3d / 3d blocks) → temporal max → 16-band HPP →
    per-part FCs (→ BNNecks for training).

    sils [n, s, 64, 44] → embed [n, channels[2], 16]: OpenGait's ``inference_feat['embeddings']`` = ``embed_1``,
    the FCs output (configs do not set ``use_emb2``). Shapes: stage1 [n, 64, s, 64, 44] → stage2 [n, 128, s, 32, 22]
    → stage3 [n, 256, s, 16, 11] → stage4 [n, 512, s, 16, 11] → max [n, 512, 16, 11] → HPP [n, 512, 16].
    Any s >= 1: the temporal convs pad by one frame.
    """

    def __init__(self, class_num: int, mode: str = "p3d", layers: Sequence[int] = (1, 4, 4, 1),
                 channels: Sequence[int] = (64, 128, 256, 512), in_channels: int = 1) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"DeepGaitV2 mode must be one of {MODES}, got {mode!r}")
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError("DeepGaitV2 needs four stage depths and four channel sizes")
        self.mode = mode
        c = list(channels)
        self.layer0 = PerFrame(nn.Sequential(conv3x3(in_channels, c[0]), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True)))
        self.layer1 = PerFrame(nn.Sequential(*[Block2D(c[0], c[0], 1, None) for _ in range(layers[0])]))
        self.layer2 = residual_stage(mode, c[0], c[1], _STRIDES[1], layers[1])
        self.layer3 = residual_stage(mode, c[1], c[2], _STRIDES[2], layers[2])
        self.layer4 = residual_stage(mode, c[2], c[3], _STRIDES[3], layers[3])
        self.FCs = SeparateFCs(PARTS, c[3], c[2])
        self.BNNecks = SeparateBNNecks(PARTS, c[2], class_num)

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return fc_embedding_shape(self.FCs.fc_bin)

    @staticmethod
    def kwargs_from_state(state: Mapping[str, torch.Tensor]) -> dict:
        """Constructor arguments from an OpenGait DeepGaitV2 state_dict: mode from the stage-2 key layout, stage
        depths from the block indices, widths from the conv shapes, class_num from BNNecks.fc_bin."""
        if "layer2.0.shortcut3d.weight" in state:
            mode, fmt = "p3d", "layer{i}.{j}.conv1.forward_block.0.weight"
        elif "layer2.forward_block.0.conv1.weight" in state:
            mode, fmt = "2d", "layer{i}.forward_block.{j}.conv1.weight"
        elif "layer2.0.conv1.weight" in state:
            mode, fmt = "3d", "layer{i}.{j}.conv1.weight"
        else:
            raise ValueError("no stage-2 block (layer2.0.shortcut3d / layer2.forward_block.0 / layer2.0.conv1)")
        c0, c_in = shape_of(state, "layer0.forward_block.0.weight", 4)[:2]
        depth = [len(block_indices(state, "layer1.forward_block."))]
        channels = [c0]
        for i in (2, 3, 4):
            prefix = fmt.format(i=i, j="#").split("#")[0]
            depth.append(len(block_indices(state, prefix)))
            channels.append(shape_of(state, fmt.format(i=i, j=0), 5 if mode == "3d" else 4)[0])
        if min(depth) < 1:
            raise ValueError(f"a stage without blocks (depths {depth})")
        class_num = shape_of(state, "BNNecks.fc_bin", 3)[2]
        return {"class_num": class_num, "mode": mode, "layers": tuple(depth), "channels": tuple(channels),
                "in_channels": c_in}

    def _pooled(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] → HPP of the temporal max of stage 4, [n, c3, 16]."""
        if sils.dim() != 4:
            raise ValueError(f"silhouettes must be [n, s, h, w], got {tuple(sils.shape)}")
        x = sils.unsqueeze(1)  # [n, 1, s, h, w]
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(x)))))
        return horizontal_pool(x.amax(2), (PARTS,))

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] → [n, channels[2], 16] (``embed_1``)."""
        return self.FCs(self._pooled(sils))

    def forward(self, sils: torch.Tensor) -> dict[str, torch.Tensor]:
        """sils [n, s, h, w] → {'embed': [n, c2, 16], 'logits': [n, class_num, 16]}."""
        embed = self.FCs(self._pooled(sils))
        return {"embed": embed, "logits": self.BNNecks(embed)[1]}
