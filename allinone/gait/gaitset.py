"""GaitSet (Chao et al., AAAI 2019) as OpenGait builds it (opengait/modeling/models/gaitset.py).

State_dict keys equal OpenGait's: ``set_block{1,2,3}.forward_block.{0,2}.conv.weight``,
``gl_block{2,3}.{0,2}.conv.weight``, ``Head.fc_bin``. No BatchNorm, no classifier (triplet loss only).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from allinone.gait.blocks import Conv2dUnit, PerFrame, fc_embedding_shape, horizontal_pool, shape_of
from allinone.gait.gaitbase import SeparateFCs

BINS = (16, 8, 4, 2, 1)  # OpenGait's bin_num for GaitSet; two branches → 62 parts


def _set_block(c_in: int, c_out: int, first: bool, pool: bool) -> nn.Sequential:
    """conv (5x5 in the first block, else 3x3) → LeakyReLU → conv 3x3 → LeakyReLU [→ 2x2 max-pool]."""
    k, pad = (5, 2) if first else (3, 1)
    layers: list[nn.Module] = [Conv2dUnit(c_in, c_out, k, 1, pad), nn.LeakyReLU(inplace=True),
                               Conv2dUnit(c_out, c_out, 3, 1, 1), nn.LeakyReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class GaitSet(nn.Module):
    """Frame-level CNN with set (temporal max) pooling after each of three blocks, a global branch fed by those
    pooled maps, horizontal pyramid pooling of both branches, and per-part FCs.

    sils [n, s, 64, 44] → embed [n, out_channels, 62] (OpenGait's ``inference_feat['embeddings']``: the Head output).
    Shapes: block1 [n, c1, s, 32, 22] → block2 [n, c2, s, 16, 11] → block3 [n, c3, s, 16, 11];
    parts = 31 bands (16+8+4+2+1) of the set branch followed by 31 of the global branch.
    CASIA-B config: channels (32, 64, 128), out 256; GREW/OUMVLP: channels (64, 128, 256), out 256.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128), out_channels: int = 256, in_channels: int = 1,
                 frame_chunk: int = 64) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError("GaitSet needs three channel sizes")
        c1, c2, c3 = channels
        self.set_block1 = PerFrame(_set_block(in_channels, c1, first=True, pool=True))
        self.set_block2 = PerFrame(_set_block(c1, c2, first=False, pool=True))
        self.set_block3 = PerFrame(_set_block(c2, c3, first=False, pool=False))
        self.gl_block2 = _set_block(c1, c2, first=False, pool=True)
        self.gl_block3 = _set_block(c2, c3, first=False, pool=False)
        self.Head = SeparateFCs(2 * sum(BINS), c3, out_channels)
        # Frames per set-block pass in `embed`; the running max over chunks is exact and bounds memory.
        self.frame_chunk = frame_chunk

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return fc_embedding_shape(self.Head.fc_bin)

    @staticmethod
    def kwargs_from_state(state: Mapping[str, torch.Tensor]) -> dict:
        """Constructor arguments read from an OpenGait GaitSet state_dict's shapes."""
        c1, c_in = shape_of(state, "set_block1.forward_block.0.conv.weight", 4)[:2]
        c2 = shape_of(state, "set_block2.forward_block.0.conv.weight", 4)[0]
        c3 = shape_of(state, "set_block3.forward_block.0.conv.weight", 4)[0]
        parts, _, out = shape_of(state, "Head.fc_bin", 3)
        if parts != 2 * sum(BINS):
            raise ValueError(f"Head.fc_bin has {parts} parts; OpenGait's GaitSet has 62 (bins 16+8+4+2+1, twice)")
        return {"channels": (c1, c2, c3), "out_channels": out, "in_channels": c_in}

    def _set_maxima(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [n, 1, s, h, w] → temporal maxima of the three set blocks' outputs, each [n, c, h', w']."""
        o1 = self.set_block1(x)
        o2 = self.set_block2(o1)
        o3 = self.set_block3(o2)
        return o1.amax(2), o2.amax(2), o3.amax(2)

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] → [n, out_channels, 62]."""
        if sils.dim() != 4:
            raise ValueError(f"silhouettes must be [n, s, h, w], got {tuple(sils.shape)}")
        x = sils.unsqueeze(1)
        s = x.shape[2]
        step = max(1, self.frame_chunk)
        m1 = m2 = m3 = None
        for start in range(0, s, step):
            a, b, c = self._set_maxima(x[:, :, start:start + step])
            if m1 is None:
                m1, m2, m3 = a, b, c
            else:
                m1, m2, m3 = torch.maximum(m1, a), torch.maximum(m2, b), torch.maximum(m3, c)
        gl = self.gl_block3(self.gl_block2(m1) + m2) + m3
        feat = torch.cat([horizontal_pool(m3, BINS), horizontal_pool(gl, BINS)], dim=-1)  # [n, c3, 62]
        return self.Head(feat)

    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed` (GaitSet has no classifier head)."""
        return self.embed(sils)
