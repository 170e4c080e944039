"""GaitPart (Fan et al., CVPR 2020) as OpenGait builds it (models/gaitpart.py, backbones/plain.py, FocalConv2d).

State_dict keys equal OpenGait's: ``Backbone.forward_block.feature.{i}.conv.weight`` (Plain backbone),
``TFA.pooling_func.conv1d3x1.{part}.{0,2}.conv.weight``, ``TFA.pooling_func.conv1d3x3.{part}.{0,2}.conv.weight``,
``Head.fc_bin``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from allinone.gait.blocks import Conv1dUnit, Conv2dUnit, PerFrame, block_indices, fc_embedding_shape, horizontal_pool, shape_of
from allinone.gait.gaitbase import SeparateFCs

_FEATURE = "Backbone.forward_block.feature."
# Focal-conv halving per conv layer, keyed by the number of convs between max-pools. Halving is not stored in a
# checkpoint, so only the layouts of OpenGait's configs are accepted:
#   (2, 2, 2): configs/gaitpart/gaitpart.yaml (CASIA-B): BC-32 BC-32 M FC-64-2 FC-64-2 M FC-128-3 FC-128-3
#   (2, 2, 4): gaitpart_GREW / _OUMVLP / _casiae: BC-32 BC-32 M BC-64 BC-64 M FC-128-3 FC-128-3 FC-256-3 FC-256-3
_HALVINGS = {(2, 2, 2): (0, 0, 2, 2, 3, 3), (2, 2, 4): (0, 0, 0, 0, 3, 3, 3, 3)}


def parse_layer(token: str) -> tuple[int, int] | None:
    """'BC-64' → (64, 0); 'FC-128-3' → (128, 3); 'M' → None."""
    parts = token.split("-")
    if parts == ["M"]:
        return None
    if parts[0] == "BC" and len(parts) == 2:
        return int(parts[1]), 0
    if parts[0] == "FC" and len(parts) == 3:
        return int(parts[1]), int(parts[2])
    raise ValueError(f"bad Plain layer {token!r} (expected BC-<c>, FC-<c>-<halving> or M)")


class _Plain(nn.Module):
    """OpenGait's Plain backbone: first conv 5x5, the others 3x3, each followed by LeakyReLU; 'M' = 2x2 max-pool.
    [b, c_in, h, w] → [b, c_last, h / 2^#M, w / 2^#M]."""

    def __init__(self, layers_cfg: Sequence[str], in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for token in layers_cfg:
            spec = parse_layer(token)
            if spec is None:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            c_out, halving = spec
            k, pad = (5, 2) if not layers else (3, 1)
            layers += [Conv2dUnit(c_in, c_out, k, 1, pad, strips=2 ** halving), nn.LeakyReLU(inplace=True)]
            c_in = c_out
        self.out_channels = c_in
        self.feature = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(x)


class TemporalAggregator(nn.Module):
    """GaitPart's micro-motion template builder + temporal max (OpenGait's TemporalFeatureAggregator).

    x [n, c, s, p] → [n, c, p]. Per part, two branches (window 3 and 5) weight a local avg+max template of the
    sequence by a sigmoid attention from a per-part 1-D conv net; the sum is max-pooled over time. The 16 per-part
    conv nets keep OpenGait's module layout (``conv1d3x1.{part}``) and run as one grouped convolution.
    """

    def __init__(self, channels: int, parts: int, squeeze: int = 4) -> None:
        super().__init__()
        hidden = channels // squeeze

        def net(k2: int) -> nn.Sequential:
            return nn.Sequential(Conv1dUnit(channels, hidden, 3, padding=1), nn.LeakyReLU(inplace=True),
                                 Conv1dUnit(hidden, channels, k2, padding=k2 // 2))

        self.parts = parts
        self.conv1d3x1 = nn.ModuleList([net(1) for _ in range(parts)])
        self.conv1d3x3 = nn.ModuleList([net(3) for _ in range(parts)])

    @staticmethod
    def _attention(nets: nn.ModuleList, x: torch.Tensor, parts: int) -> torch.Tensor:
        """x [n, p*c, s] (part-major) → sigmoid scores [n, p*c, s] of each part's conv net on its own channels."""
        w1 = torch.cat([m[0].conv.weight for m in nets], dim=0)  # [p*hidden, c, 3]
        w2 = torch.cat([m[2].conv.weight for m in nets], dim=0)  # [p*c, hidden, k]
        h = F.leaky_relu(F.conv1d(x, w1, padding=1, groups=parts))
        return torch.sigmoid(F.conv1d(h, w2, padding=w2.shape[-1] // 2, groups=parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, s, p = x.shape
        if p != self.parts:
            raise ValueError(f"expected {self.parts} parts, got {p}")
        z = x.permute(0, 3, 1, 2).reshape(n, p * c, s)  # [n, p*c, s]
        # templates: avg (zero padding counted, as nn.AvgPool1d does) + max over windows of 3 and 5 frames
        t3 = F.avg_pool1d(z, 3, 1, 1) + F.max_pool1d(z, 3, 1, 1)
        t5 = F.avg_pool1d(z, 5, 1, 2) + F.max_pool1d(z, 5, 1, 2)
        y = t3 * self._attention(self.conv1d3x1, z, p) + t5 * self._attention(self.conv1d3x3, z, p)
        return y.amax(-1).reshape(n, p, c).transpose(1, 2)  # [n, c, p]


class _SequencePooling(nn.Module):
    """Holds a temporal pooling module under ``pooling_func`` (OpenGait's PackSequenceWrapper naming)."""

    def __init__(self, pooling_func: nn.Module) -> None:
        super().__init__()
        self.pooling_func = pooling_func

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooling_func(x)


class GaitPart(nn.Module):
    """Per-frame Plain CNN with focal convs → 16-band HPP per frame → temporal aggregator → per-part FCs.

    sils [n, s, 64, 44] → embed [n, out_channels, parts] (OpenGait's ``inference_feat['embeddings']``, Head output).
    Shapes: backbone [n, c, s, 16, 11] → HPP [n, c, s, 16] → TFA [n, c, 16] → Head [n, out, 16].
    CASIA-B config: c = 128, out 128; GREW/OUMVLP/CASIA-E: c = 256, out 256.
    """

    def __init__(self, layers_cfg: Sequence[str] = ("BC-32", "BC-32", "M", "FC-64-2", "FC-64-2", "M",
                                                   "FC-128-3", "FC-128-3"),
                 in_channels: int = 1, out_channels: int = 128, parts: int = 16, squeeze: int = 4,
                 frame_chunk: int = 64) -> None:
        super().__init__()
        self.layers_cfg = tuple(layers_cfg)
        plain = _Plain(self.layers_cfg, in_channels)
        c = plain.out_channels
        self.Backbone = PerFrame(plain)
        self.Head = SeparateFCs(parts, c, out_channels)
        self.TFA = _SequencePooling(TemporalAggregator(c, parts, squeeze))
        self.parts = parts
        # Frames per backbone pass in `embed` (the backbone and HPP are per frame, so chunking is exact).
        self.frame_chunk = frame_chunk

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return fc_embedding_shape(self.Head.fc_bin)

    @staticmethod
    def kwargs_from_state(state: Mapping[str, torch.Tensor]) -> dict:
        """Constructor arguments from an OpenGait GaitPart state_dict: the Plain layer list is rebuilt from the
        Sequential indices (conv at i, LeakyReLU at i+1, a skipped index is a max-pool) and the conv widths; the
        focal halving comes from the matching OpenGait config layout (see _HALVINGS)."""
        idx = block_indices(state, _FEATURE)
        if not idx:
            raise ValueError(f"no {_FEATURE}0.conv.weight")
        widths: list[int | None] = []  # conv widths, None = max-pool
        pos = 0
        for i in idx:
            if i == pos + 1:
                widths.append(None)
            elif i != pos:
                raise ValueError(f"Plain backbone layer indices {idx} are not conv/LeakyReLU/max-pool steps")
            widths.append(shape_of(state, f"{_FEATURE}{i}.conv.weight", 4)[0])
            pos = i + 2
        c_in = shape_of(state, f"{_FEATURE}{idx[0]}.conv.weight", 4)[1]
        layout, run = [], 0
        for w in widths + [None]:
            if w is None:
                layout.append(run)
                run = 0
            else:
                run += 1
        halvings = _HALVINGS.get(tuple(layout))
        if halvings is None:
            raise ValueError(f"Plain backbone with {layout} convs between max-pools matches no OpenGait GaitPart "
                             f"config (known: {sorted(_HALVINGS)})")
        convs = iter(halvings)
        tokens = []
        for w in widths:
            if w is None:
                tokens.append("M")
            else:
                h = next(convs)
                tokens.append(f"FC-{w}-{h}" if h else f"BC-{w}")
        parts, c_last, out = shape_of(state, "Head.fc_bin", 3)
        hidden = shape_of(state, "TFA.pooling_func.conv1d3x1.0.0.conv.weight", 3)[0]
        if hidden < 1 or c_last % hidden:
            raise ValueError(f"TFA hidden width {hidden} does not divide the {c_last} backbone channels")
        return {"layers_cfg": tuple(tokens), "in_channels": c_in, "out_channels": out, "parts": parts,
                "squeeze": c_last // hidden}

    def _part_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, 1, s, h, w] → per-frame HPP features [n, c, s, parts]."""
        maps = self.Backbone(x)  # [n, c, s, h', w']
        n, c, s = maps.shape[:3]
        flat = maps.transpose(1, 2).reshape(n * s, c, *maps.shape[3:])
        return horizontal_pool(flat, (self.parts,)).reshape(n, s, c, self.parts).transpose(1, 2)

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] → [n, out_channels, parts]. Any s >= 1 (the templates pad in time)."""
        if sils.dim() != 4:
            raise ValueError(f"silhouettes must be [n, s, h, w], got {tuple(sils.shape)}")
        x = sils.unsqueeze(1)
        step = max(1, self.frame_chunk)
        feats = torch.cat([self._part_features(x[:, :, i:i + step]) for i in range(0, x.shape[2], step)], dim=2)
        return self.Head(self.TFA(feats))

    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed` (GaitPart has no classifier head)."""
        return self.embed(sils)
