"""Gallery search for large galleries that is exact within the threshold: a lower bound on OpenGait's distance
rules tracks out, and only the tracks it cannot rule out are measured exactly.

OpenGait's distances are part-averaged (decide/match.py distance_matrix): for features a, b of shape [c, p],

    euc(a, b) = 1/p * sum_k |a_k - b_k|          cos(a, b) = 1 - 1/p * sum_k u_k . v_k   (u_k = a_k / |a_k|)

Neither is the L2 distance of the flattened vectors that a vector index measures. For euc,
|a - b|_2 <= sum_k |a_k - b_k| = p * euc(a, b), so an L2 ball of radius p * t holds every track within t — but on
gait-like features (distance spread evenly over the parts, |a - b|_2 ~ sqrt(p) * euc) that ball holds about every
track within sqrt(p) * t = 4 t, in practice the whole gallery. So the bound is taken part by part instead:

    for each part k, an orthonormal projection P_k (PCA of that part, trained on a seeded random sample of the
    gallery) to r dimensions, and R_k = I - P_k^T P_k the rest. Then
        |a_k - b_k|^2 = |P_k(a_k - b_k)|^2 + |R_k(a_k - b_k)|^2 >= |P_k a_k - P_k b_k|^2 + (|R_k a_k| - |R_k b_k|)^2
    (the last step is the triangle inequality). With z_k(x) = (P_k x_k, |R_k x_k|) in r + 1 dimensions, the bound
    on part k is |z_k(a) - z_k(b)|, and
        euc(a, b) >= 1/p * sum_k |z_k(a) - z_k(b)|
        cos(a, b) >= 1/(2p) * sum_k |z_k(u) - z_k(v)|^2       (on per-part unit vectors, 1 - u.v = |u - v|^2 / 2;
                                                                 a zero part makes the left side larger still)

A track whose bound exceeds the threshold cannot be within it; every other one is measured exactly. So every
identity within the threshold is found, by construction, whatever the data; how many tracks the bound lets through
(the cost) depends on how much of the features' variance the r dimensions hold. Beyond the threshold the ranking is
approximate: the ``shortlist`` tracks of smallest bound are measured too, and the nearest identity is known to be
exact when its distance is at most the smallest bound of every track not measured (``nearest_exact``).

The bound table is r + 1 float32 per part and track (16 x 16 x 4 = 1 KB a track at r = 15) plus 16 bytes of ids,
held in memory; the scan is one matrix product per part over all tracks, chunked.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
CHUNK = 65_536


def unit_parts(x: np.ndarray) -> np.ndarray:
    """[n, c, p] with each part scaled to unit length over the channels, as OpenGait's F.normalize (eps 1e-12)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _transform(x: np.ndarray, metric: str) -> np.ndarray:
    return unit_parts(x) if metric == "cos" else np.asarray(x, np.float32)


def part_projections(sample: np.ndarray, dims: int) -> np.ndarray:
    """[p, r, c] orthonormal rows: the top ``dims`` principal directions of each part of ``sample`` [m, c, p]."""
    m, c, p = sample.shape
    r = min(dims, c)
    out = np.empty((p, r, c), np.float32)
    for k in range(p):
        x = sample[:, :, k].astype(np.float64)
        x = x - x.mean(0)
        _, vecs = np.linalg.eigh(x.T @ x)  # ascending eigenvalues; eigenvectors orthonormal
        out[k] = vecs[:, ::-1][:, :r].T
    return out


def bound_coordinates(feats: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """z [p, n, r + 1]: per part the projected coordinates and the norm of what the projection leaves out."""
    x = feats.astype(np.float64)  # [n, c, p]
    pr = proj.astype(np.float64)
    y = np.einsum("krc,nck->knr", pr, x)  # [p, n, r]
    total = np.einsum("nck,nck->kn", x, x)
    rest = np.sqrt(np.maximum(total - (y * y).sum(2), 0.0))
    return np.concatenate([y, rest[:, :, None]], axis=2).astype(np.float32)


def lower_bounds(zq: np.ndarray, z: np.ndarray, metric: str) -> np.ndarray:
    """[q, n] lower bounds on the metric's distance, from bound coordinates zq [p, q, r+1] and z [p, n, r+1].

    Each squared part bound |z_k(a) - z_k(b)|^2 is computed as |za|^2 + |zb|^2 - 2 za.zb in float32 and lowered by
    1e-5 (|za|^2 + |zb|^2), more than the rounding of that sum can add, so the result stays a lower bound."""
    import torch
    q = torch.from_numpy(np.ascontiguousarray(zq, np.float32))
    g = torch.from_numpy(np.ascontiguousarray(z, np.float32))
    parts = q.shape[0]
    nq = (q * q).sum(2)  # [p, q]
    ng = (g * g).sum(2)  # [p, n]
    acc = torch.zeros((q.shape[1], g.shape[1]), dtype=torch.float32)
    for k in range(parts):
        both = nq[k][:, None] + ng[k][None, :]
        sq = both - 2 * (q[k] @ g[k].T) - 1e-5 * both
        sq.clamp_(min=0)
        acc += sq.sqrt_() if metric == "euc" else sq
    return (acc / parts if metric == "euc" else acc / (2 * parts)).numpy()


@dataclass
class Hits:
    """One probe's scan: the rows whose bound is within the threshold (all of them), the rows of the
    ``shortlist`` smallest bounds, and the smallest bound of the rows in neither."""

    within: np.ndarray
    nearest: np.ndarray
    rest_bound: float


class BoundIndex:
    """The bound table of a gallery's tracks for one metric (module doc), with the track and identity ids of its
    rows and the stamp of what it was built from (gallery uuid and generation)."""

    def __init__(self, metric: str, proj: np.ndarray, z: np.ndarray, track_ids: np.ndarray,
                 identity_ids: np.ndarray, n_frames: np.ndarray, stamp: dict) -> None:
        self.metric, self.proj, self.z = metric, proj, z
        self.track_ids, self.identity_ids, self.n_frames = track_ids, identity_ids, n_frames
        self.stamp = stamp

    @classmethod
    def build(cls, metric: str, sample: np.ndarray, chunks, dims: int, stamp: dict) -> "BoundIndex":
        """sample: [m, c, p] features (a random sample of the gallery); chunks: iterable of (track ids,
        identity ids, n_frames, features [k, c, p]) covering the gallery."""
        proj = part_projections(_transform(sample, metric), dims)
        zs, tids, iids, nfs = [], [], [], []
        for tid, iid, nf, feats in chunks:
            zs.append(bound_coordinates(_transform(feats, metric), proj))
            tids.append(tid), iids.append(iid), nfs.append(nf)
        p, r = proj.shape[0], proj.shape[1]
        z = np.concatenate(zs, axis=1) if zs else np.zeros((p, 0, r + 1), np.float32)
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
        return cls(metric, proj, np.ascontiguousarray(z), cat(tids), cat(iids), cat(nfs), dict(stamp))

    def __len__(self) -> int:
        return len(self.track_ids)

    def nbytes(self) -> int:
        return int(self.z.nbytes + self.proj.nbytes + self.track_ids.nbytes + self.identity_ids.nbytes
                   + self.n_frames.nbytes)

    def query(self, probes: np.ndarray, threshold: float, shortlist: int, min_frames: int = 0) -> list[Hits]:
        """Per probe [q, c, p]: every row (with at least ``min_frames`` silhouettes) whose bound is within the
        threshold, and the ``shortlist`` of smallest bound."""
        zq = bound_coordinates(_transform(probes, self.metric), self.proj)
        # a slack of 1e-4 relative on the threshold covers the float32 rounding of the exact distance itself
        limit = float(threshold) * (1 + 1e-4) + 1e-6
        usable = self.n_frames >= min_frames
        k = shortlist + 1
        within: list[list[np.ndarray]] = [[] for _ in range(len(probes))]
        best_v = np.full((len(probes), 0), np.inf, np.float32)
        best_i = np.zeros((len(probes), 0), np.int64)
        for s in range(0, len(self), CHUNK):
            lb = lower_bounds(zq, self.z[:, s:s + CHUNK], self.metric)
            lb[:, ~usable[s:s + CHUNK]] = np.inf
            for i in range(len(probes)):
                within[i].append(np.flatnonzero(lb[i] <= limit) + s)
            m = min(k, lb.shape[1])
            part = np.argpartition(lb, m - 1, axis=1)[:, :m]
            best_v = np.concatenate([best_v, np.take_along_axis(lb, part, 1)], 1)
            best_i = np.concatenate([best_i, part + s], 1)
            if best_v.shape[1] > k:
                keep = np.argpartition(best_v, k - 1, axis=1)[:, :k]
                best_v, best_i = np.take_along_axis(best_v, keep, 1), np.take_along_axis(best_i, keep, 1)
        out = []
        for i in range(len(probes)):
            order = np.argsort(best_v[i], kind="stable")
            v, rows = best_v[i][order], best_i[i][order]
            finite = np.isfinite(v)
            v, rows = v[finite], rows[finite]
            rest = float(v[shortlist]) if len(v) > shortlist else float("inf")
            out.append(Hits(np.concatenate(within[i]) if within[i] else np.zeros(0, np.int64),
                            rows[:shortlist], rest))
        return out

    # -- on disk: one .npz, written under a unique temporary name and moved into place (os.replace) ------------
    def save(self, path: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, proj=self.proj, z=self.z, track_ids=self.track_ids, identity_ids=self.identity_ids,
                         n_frames=self.n_frames, format=np.int64(FORMAT), metric=np.str_(self.metric),
                         **{f"stamp_{k}": np.str_(str(v)) for k, v in self.stamp.items()})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> "BoundIndex | None":
        """The index in ``path``, or None when it is missing or unreadable (then it is built again)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                if int(f["format"]) != FORMAT:
                    return None
                stamp = {k[len("stamp_"):]: str(f[k]) for k in f.files if k.startswith("stamp_")}
                return cls(str(f["metric"]), f["proj"], f["z"], f["track_ids"], f["identity_ids"], f["n_frames"],
                           stamp)
        except (OSError, ValueError, KeyError, EOFError):
            return None
