"""Layers shared by the OpenGait silhouette models. Attribute names reproduce OpenGait's state_dict keys.

Layout convention (OpenGait's): sequences are ``[n, c, s, h, w]`` (channels, then frames); per-frame feature maps
are ``[n*s, c, h, w]``; part features are ``[n, c, p]``.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn


class PerFrame(nn.Module):
    """Applies a 2-D block to every frame (OpenGait's SetBlockWrapper; parameters live under ``forward_block``).

    [n, c, s, h, w] → [n, c', s, h', w'].
    """

    def __init__(self, forward_block: nn.Module) -> None:
        super().__init__()
        self.forward_block = forward_block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, s, h, w = x.shape
        y = self.forward_block(x.transpose(1, 2).reshape(n * s, c, h, w))
        return y.reshape(n, s, *y.shape[1:]).transpose(1, 2)


def in_strips(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, strips: int, dim: int) -> torch.Tensor:
    """``fn`` applied separately to ``strips`` equal bands of ``x`` along ``dim`` (zero padding at band borders).

    Matches OpenGait's ``x.split(h // strips, dim)`` + ``cat``: bands are ``h // strips`` rows, a remainder forms an
    extra, shorter band. Equal bands are stacked into the batch so ``fn`` runs once.
    """
    if strips <= 1:
        return fn(x)
    size = x.shape[dim] // strips
    if size < 1:
        raise ValueError(f"cannot cut {x.shape[dim]} rows into {strips} strips")
    bands = x.split(size, dim)
    if len(bands) == strips:  # h divisible: one call on [strips*n, ...]
        out = fn(torch.cat(bands, dim=0))
        return torch.cat(out.chunk(strips, dim=0), dim=dim)
    return torch.cat([fn(b) for b in bands], dim=dim)


class Conv1dUnit(nn.Module):
    """Bias-free Conv1d stored as ``.conv`` (GaitPart's BasicConv1d). [n, c, s] → [n, c', s']."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Conv2dUnit(nn.Module):
    """Bias-free Conv2d stored as ``.conv``: OpenGait's BasicConv2d, or FocalConv2d when ``strips`` > 1
    (each of ``strips`` horizontal bands convolved on its own). [b, c, h, w] → [b, c', h', w']."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, strips: int = 1) -> None:
        super().__init__()
        self.strips = strips
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_strips(self.conv, x, self.strips, dim=2)


class Conv3dUnit(nn.Module):
    """Bias-free Conv3d stored as ``.conv3d`` (OpenGait's BasicConv3d). [n, c, s, h, w] → [n, c', s', h', w']."""

    def __init__(self, c_in: int, c_out: int, kernel: Sequence[int] = (3, 3, 3), stride: Sequence[int] = (1, 1, 1),
                 padding: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(c_in, c_out, tuple(kernel), stride=tuple(stride), padding=tuple(padding), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3d(x)


def horizontal_pool(x: torch.Tensor, bins: Sequence[int]) -> torch.Tensor:
    """Horizontal pyramid pooling, mean + max per band: [n, c, h, w] → [n, c, sum(bins)] (h divisible by each bin)."""
    n, c = x.shape[:2]
    out = []
    for b in bins:
        z = x.reshape(n, c, b, -1)
        out.append(z.mean(-1) + z.amax(-1))
    return torch.cat(out, dim=-1)


class GeMHPP(nn.Module):
    """Generalised-mean pooling over each horizontal band (GaitGL's HPP; learnt exponent ``p`` [1]).

    [n, c, h, w] → [n, c, sum(bins)]. Computed in float32 even under autocast: x ** 6.5 overflows half precision.
    """

    def __init__(self, bins: Sequence[int] = (64,), p: float = 6.5, eps: float = 1e-6) -> None:
        super().__init__()
        self.bins = tuple(bins)
        self.eps = eps
        self.p = nn.Parameter(torch.full((1,), float(p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            p = self.p.float()
            out = []
            for b in self.bins:
                z = x.reshape(n, c, b, -1).clamp(min=self.eps).pow(p)
                out.append(z.mean(-1).pow(1.0 / p))
            return torch.cat(out, dim=-1)


def fc_embedding_shape(fc_bin: torch.Tensor) -> tuple[int, int]:
    """(c, p) of the embedding a SeparateFCs / SeparateBNNecks weight fc_bin [p, c_in, c] produces ([n, c, p])."""
    p, _, c = fc_bin.shape
    return int(c), int(p)


def shape_of(state: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    """The shape of ``state[key]``, which must exist with ``ndim`` dims (ValueError naming the key otherwise)."""
    t = state.get(key)
    if t is None or t.dim() != ndim:
        raise ValueError(f"no {ndim}-D {key}")
    return tuple(t.shape)


def block_indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    """Sorted distinct integers ``i`` over keys that start with ``prefix + 'i.'``."""
    found = set()
    for k in state:
        if k.startswith(prefix):
            head = k[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)
