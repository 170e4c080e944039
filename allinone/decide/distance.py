"""OpenGait's part-averaged distance, computed one canonical way for every caller (decisions, gallery search,
impostor evidence, evaluation, LR models), so a pair's distance never depends on what else shares the call.

euc: mean over parts of sqrt(relu(|x|^2 + |y|^2 - 2 x.y)) per part (OpenGait's cuda_dist, float32);
cos: 1 - mean over parts of x.y, with x and y L2-normalised over the channel dim (per part).

Canonical: a float32 matrix product rounds differently with the shape it is given (the BLAS takes other kernels
for a few rows or columns than for many), so the same pair measured beside 1 or 8 other probes could come out
5e-6 apart and fall on either side of a threshold. Here every product has the same shape whatever the caller asks:
probes in tiles of exactly ``PROBE_TILE`` (the last one padded with zeros), against at least ``MIN_GALLERY``
gallery tracks (padded likewise), one batched product per part on one thread (the count of threads is not left to
decide how the work is split), and each tile's sums of squares likewise. What
follows is elementwise (every entry rounded on its own whatever the tensor's shape) and the sums over parts are
added in one fixed order; tests/decide/test_distance.py checks bit-identity across batch sizes.
"""
from __future__ import annotations

import numpy as np

METRICS = ("euc", "cos")
PROBE_TILE = 8  # rows per product: at and above 4, MKL's sgemm gives every row the same result bits
MIN_GALLERY = 16  # below 16 columns MKL takes a small-matrix path that rounds differently


def _parts_first(x, rows: int):
    """[n, c, p] → [p, rows, c] float32 torch tensor, zero-padded to ``rows``."""
    import torch

    out = torch.zeros((x.shape[2], rows, x.shape[1]), dtype=torch.float32)
    out[:, :len(x)] = x.permute(2, 0, 1)
    return out


def _part_sum(t):
    """Sum over the first dim, part after part: torch's own reduction rounds an entry differently with where it
    lies in the tensor."""
    out = t[0].clone()
    for k in range(1, len(t)):
        out += t[k]
    return out


def distance_matrix(probe: np.ndarray, gallery: np.ndarray, metric: str = "euc") -> np.ndarray:
    """probe [n, c, p], gallery [m, c, p] → [n, m] float32 (module doc)."""
    import torch
    import torch.nn.functional as F

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = torch.as_tensor(np.asarray(probe), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(gallery), dtype=torch.float32)
    if x.dim() != 3 or y.dim() != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"probe [n, c, p] and gallery [m, c, p] must agree, got {tuple(x.shape)} and {tuple(y.shape)}")
    n, m, parts = len(x), len(y), x.shape[2]
    yp = _parts_first(y, max(m, MIN_GALLERY))  # [p, m', c]
    if metric == "cos":  # over the channels, contiguous in this layout (a zero row stays zero)
        yp = F.normalize(yp, p=2, dim=2)
    if n == 0:
        return np.zeros((0, m), np.float32)
    yt = yp.transpose(1, 2)
    # squared lengths as sums of squares, as OpenGait (a squared norm rounds 5x worse here)
    ysq = (yp * yp).sum(2).unsqueeze(1)  # [p, 1, m']
    tiles = -(-n // PROBE_TILE)
    xp = _parts_first(x, tiles * PROBE_TILE)  # [p, rows, c]
    if metric == "cos":
        xp = F.normalize(xp, p=2, dim=2)
    xt = xp.reshape(parts, tiles, PROBE_TILE, -1).transpose(0, 1).contiguous()  # [tiles, p, tile, c]
    inner = torch.empty((tiles, parts, PROBE_TILE, yp.shape[1]), dtype=torch.float32)
    xsq = torch.empty((tiles, parts, PROBE_TILE, 1), dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small products: a thread pool costs more than it gives, and splits work by count
    try:
        for k in range(tiles):  # the shape-bound steps, one tile of the same shape at a time
            torch.bmm(xt[k], yt, out=inner[k])
            torch.sum(xt[k] * xt[k], 2, keepdim=True, out=xsq[k])
    finally:
        torch.set_num_threads(threads)
    # the rest is elementwise (each entry rounded on its own, whatever the shape) and the fixed-order part sum
    if metric == "cos":
        d = 1 - _part_sum(inner.transpose(0, 1)) / parts
    else:
        d = _part_sum(torch.sqrt(F.relu(xsq + ysq.unsqueeze(0) - 2 * inner)).transpose(0, 1)) / parts
    return d.reshape(tiles * PROBE_TILE, -1)[:n, :m].numpy().copy()


__all__ = ["METRICS", "MIN_GALLERY", "PROBE_TILE", "distance_matrix"]
