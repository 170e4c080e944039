"""GaitBase: OpenGait's ``Baseline`` model with its ResNet9 backbone, as configured in configs/gaitbase.

Module and parameter names reproduce OpenGait's state_dict keys exactly (``Backbone.forward_block.conv1.conv``,
``FCs.fc_bin``, ``BNNecks.bn1d`` ...), so an OpenGait checkpoint's ``model`` dict loads with ``strict=True``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from allinone.gait.blocks import fc_embedding_shape


class _ConvNoBias(nn.Module):
    """A bias-free 2-D convolution held under ``.conv`` (OpenGait's BasicConv2d naming)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """One residual stage of a single torchvision BasicBlock, with a 1x1 conv + BN shortcut where shapes change."""
    from torchvision.models.resnet import BasicBlock

    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
    return nn.Sequential(BasicBlock(c_in, c_out, stride=stride, downsample=shortcut))


class ResNet9(nn.Module):
    """GaitBase's backbone: 3x3 stem conv + BN + ReLU (no max-pool), then four one-block stages.

    [b, 1, 64, 44] → [b, channels[3], 16, 11] with strides 1, 2, 2, 1.
    """

    def __init__(self, channels: Sequence[int] = (64, 128, 256, 512), in_channel: int = 1,
                 strides: Sequence[int] = (1, 2, 2, 1)) -> None:
        super().__init__()
        if len(channels) != 4 or len(strides) != 4:
            raise ValueError("ResNet9 needs four channel sizes and four strides")
        self.conv1 = _ConvNoBias(in_channel, channels[0], 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        c_prev = channels[0]
        for i, (c, s) in enumerate(zip(channels, strides), start=1):
            setattr(self, f"layer{i}", _stage(c_prev, c, s))
            c_prev = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [b, c_in, h, w] → [b, c_out, h/4, w/4]."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class FrameFolding(nn.Module):
    """Runs a 2-D network on every frame by folding frames into the batch (OpenGait's SetBlockWrapper).

    Returns frames-second, [n, s, c, h, w], which is what the temporal max-pooling that follows wants.
    """

    def __init__(self, forward_block: nn.Module) -> None:
        super().__init__()
        self.forward_block = forward_block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [n, s, c, h, w] → [n, s, c', h', w']."""
        n, s = x.shape[:2]
        y = self.forward_block(x.reshape(n * s, *x.shape[2:]))
        return y.reshape(n, s, *y.shape[1:])


class SeparateFCs(nn.Module):
    """One linear map per horizontal part: fc_bin [p, c_in, c_out]; [n, c_in, p] → [n, c_out, p]."""

    def __init__(self, parts_num: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.empty(parts_num, in_channels, out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [n, c_in, p] → [n, c_out, p]."""
        return torch.matmul(x.permute(2, 0, 1), self.fc_bin).permute(1, 2, 0).contiguous()


class SeparateBNNecks(nn.Module):
    """BatchNorm1d over all c*p features, then per-part cosine classifier (fc_bin [p, c, class_num])."""

    def __init__(self, parts_num: int, in_channels: int, class_num: int) -> None:
        super().__init__()
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.empty(parts_num, in_channels, class_num)))
        self.bn1d = nn.BatchNorm1d(in_channels * parts_num)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [n, c, p] → (normalised BN feature [n, c, p], logits [n, class_num, p])."""
        n, c, p = x.shape
        feat = self.bn1d(x.reshape(n, c * p)).reshape(n, c, p)
        feat = F.normalize(feat.permute(2, 0, 1), dim=-1)  # [p, n, c]
        logits = torch.matmul(feat, F.normalize(self.fc_bin, dim=1))  # [p, n, class_num]
        return feat.permute(1, 2, 0).contiguous(), logits.permute(1, 2, 0).contiguous()


class GaitBase(nn.Module):
    """OpenGait Baseline (GaitBase): per-frame ResNet9, temporal max, 16-bin HPP, per-part FCs and BNNecks.

    The inference embedding is the FC output (OpenGait's ``embed_1``): [n, out_channels, parts].
    Channel sizes are those of OpenGait's GaitBase configs; only ``class_num`` differs between datasets
    (GREW: 20000).
    """

    def __init__(self, class_num: int, channels: Sequence[int] = (64, 128, 256, 512), parts: int = 16,
                 out_channels: int = 256, frame_chunk: int = 16) -> None:
        super().__init__()
        self.parts = parts
        # Frames per backbone call in `embed` (the temporal max over chunks is exact). Bounds memory on long
        # sequences; on CPU small chunks are also faster (cache): 120 frames took ~1.06 s at 16 vs ~1.55 s at 128.
        self.frame_chunk = frame_chunk
        self.Backbone = FrameFolding(ResNet9(channels))
        self.FCs = SeparateFCs(parts, channels[-1], out_channels)
        self.BNNecks = SeparateBNNecks(parts, out_channels, class_num)

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return fc_embedding_shape(self.FCs.fc_bin)

    @staticmethod
    def kwargs_from_state(state: Mapping[str, torch.Tensor]) -> dict:
        """Constructor arguments from an OpenGait GaitBase state_dict: class_num from BNNecks.fc_bin [16, 256, k].
        Widths are those of every OpenGait GaitBase config; other shapes are refused by the key/shape check."""
        t = state.get("BNNecks.fc_bin")
        if t is None or t.dim() != 3:
            raise ValueError("no 3-D BNNecks.fc_bin (is it another OpenGait model?)")
        return {"class_num": int(t.shape[-1])}

    @staticmethod
    def _frames_first(sils: torch.Tensor) -> torch.Tensor:
        """[n, s, h, w] or [n, 1, s, h, w] → [n, s, 1, h, w]."""
        if sils.dim() == 4:
            return sils.unsqueeze(2)
        if sils.dim() == 5 and sils.shape[1] == 1:
            return sils.transpose(1, 2)
        raise ValueError(f"silhouettes must be [n, s, h, w] or [n, 1, s, h, w], got {tuple(sils.shape)}")

    def _hpp(self, x: torch.Tensor) -> torch.Tensor:
        """Horizontal pooling, mean + max per bin: [n, c, h, w] → [n, c, parts]."""
        n, c = x.shape[:2]
        z = x.reshape(n, c, self.parts, -1)
        return z.mean(-1) + z.amax(-1)

    def _pooled(self, sils: torch.Tensor, chunk: int | None) -> torch.Tensor:
        """[n, s, 1, h, w] → temporal max of the backbone maps, [n, c, h', w']."""
        s = sils.shape[1]
        if chunk is None or s <= chunk:
            return self.Backbone(sils).amax(dim=1)
        pooled = None
        for start in range(0, s, chunk):
            part = self.Backbone(sils[:, start:start + chunk]).amax(dim=1)
            pooled = part if pooled is None else torch.maximum(pooled, part)
        return pooled

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        """Inference embedding only. sils: [n, s, h, w] or [n, 1, s, h, w] → [n, out_channels, parts]."""
        x = self._pooled(self._frames_first(sils), self.frame_chunk)
        return self.FCs(self._hpp(x))

    def forward(self, sils: torch.Tensor) -> dict[str, torch.Tensor]:
        """sils: [n, s, h, w] or [n, 1, s, h, w] →
        {'embed': [n, out_channels, parts] (inference embedding), 'logits': [n, class_num, parts]}."""
        x = self._pooled(self._frames_first(sils), None)
        embed = self.FCs(self._hpp(x))
        _, logits = self.BNNecks(embed)
        return {"embed": embed, "logits": logits}
