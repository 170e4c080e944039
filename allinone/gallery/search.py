"""Gallery search for large galleries that is exact within the threshold: a lower bound on OpenGait's distance
rules tracks out, and only the tracks it cannot rule out are measured exactly.

OpenGait's distances are part-averaged (decide/distance.py distance_matrix): for features a, b of shape [c, p],

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

That bound alone holds little where the parts' variance is spread over many directions, so a second bound is
taken beside it, from the triangle inequality around list centres: the tracks are split into lists by k-means (on the
bound coordinates of the seeded random sample), each list has a centre m in the full feature space (the mean of all
its members), and every track keeps tau_k = |x_k - m_k| per part, measured exactly. For a probe,
    |a_k - b_k| >= | |a_k - m_k| - tau_k(b) |
with |a_k - m_k| measured exactly for every centre (a few thousand, cheap). A whole list is skipped when even its
farthest member cannot come within the threshold (|a_k - m_k| - max tau_k over the list, per part). The two bounds
are combined part by part (the larger of the two bounds |a_k - b_k|), then averaged (euc) or squared and averaged
(cos) as above.

A track whose bound exceeds the threshold cannot be within it; every other one is measured exactly. So every
identity within the threshold is found, by construction, whatever the data; how many tracks the bound lets through
(the cost) depends on the data: how much of the features' variance the r dimensions hold, and how tight the lists
are against the threshold. Beyond the threshold the ranking is approximate: the ``shortlist`` tracks of smallest
bound among the lists looked at (lists are looked at in order of their bound, until the shortlist is full) are
measured too, and the nearest identity is known to be exact when its distance is at most the smallest bound of
every track not measured (``nearest_exact``).

Floating point: coordinates and each track's tau are computed in float64 and stored in float32, and a probe's
distances to the centres are computed in float32 with their rounding allowed for on both sides (centre_distances);
every bound is lowered by a relative 1e-5, more than that rounding and the float32 arithmetic of the scan can add,
so it stays a lower bound on the true distance (the tests check it against float64 brute force, with a bound nearly tight). The
distance that decides is OpenGait's formula in float32, which can come out below the true one: per part it computes
|a|^2 + |b|^2 - 2 a.b over c channels, off by at most gamma (|a|^2 + |b|^2) with gamma = 2.02 c 2^-24 (the
textbook bound for a float32 dot product of length c, twice), so for a near-duplicate, whose true squared distance
is small beside the squared lengths, the float32 distance can be lower by up to sqrt(gamma (|a_k|^2 + |b_k|^2)) a
part (seen here: 0.45205 against 0.45197, 1.7e-4). Each bound is lowered by that (euc; for cos by 3.03 c 2^-24,
the error of 1 - u.v on float32 unit vectors), so it is a lower bound on the float32 distance too, and a track that
float32 puts within the threshold is measured.

Memory: per track (r + 1) * p float32 coordinates, p float32 squared lengths and p float32 tau (16 x 18 x 4 = 1.2 KB
at r = 15, p = 16) plus 24 bytes of ids; the centres are [p, lists, c] float32 (at most 8,192 lists: 134 MB at
[256, 16]).
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 2
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
    """z [p, n, r + 1]: per part the projected coordinates and the norm of what the projection leaves out (float64
    arithmetic, one matrix product per part)."""
    p, r, _ = proj.shape
    out = np.empty((p, len(feats), r + 1), np.float32)
    for k in range(p):
        x = np.asarray(feats[:, :, k], np.float64)
        y = x @ proj[k].astype(np.float64).T
        out[k, :, :r] = y
        out[k, :, r] = np.sqrt(np.maximum(np.einsum("nc,nc->n", x, x) - np.einsum("nr,nr->n", y, y), 0.0))
    return out


def part_bounds(zq: np.ndarray, z: np.ndarray, zn: np.ndarray) -> np.ndarray:
    """[p, m] lower bounds on |a_k - b_k| from one probe's zq [p, r+1] and rows z [p, m, r+1] (zn = |z|^2 [p, m]).

    |z_k(a) - z_k(b)|^2 is computed as |za|^2 + |zb|^2 - 2 za.zb in float32 and lowered by 1e-5 (|za|^2 + |zb|^2),
    more than the rounding of that sum and of the stored coordinates can add, so the result stays a lower bound."""
    nq = (zq.astype(np.float32) ** 2).sum(1)  # [p]
    both = zn + nq[:, None]
    dot = np.einsum("kmr,kr->km", z, zq.astype(np.float32))
    sq = both - 2 * dot - 1e-5 * both
    return np.sqrt(np.maximum(sq, 0.0))


def _aggregate(per_part: np.ndarray, metric: str) -> np.ndarray:
    """Bounds on |a_k - b_k| (parts on axis 0) to a bound on the metric's distance (module doc)."""
    p = per_part.shape[0]
    return per_part.mean(0) if metric == "euc" else (per_part ** 2).sum(0) / (2 * p)


def float32_gamma(c: int) -> float:
    """gamma for a float32 dot product of length c: |a|^2 + |b|^2 - 2 a.b in float32 is off by at most
    gamma (|a|^2 + |b|^2) (module doc)."""
    return 2.02 * c * 2.0 ** -24


def default_lists(n: int, sample: int) -> int:
    """How many lists for ``n`` tracks trained on ``sample`` of them: 16 sqrt(n) (the top of FAISS's guidance for
    inverted lists), at most one per 6 sample tracks and at most 8,192. More lists make the triangle bound tighter
    (a list that k-means left spanning two groups of tracks has a centre far from both): on the benchmark's data at
    200,000 tracks, 4,096 lists let 6.7% of the tracks through the bound and 8,192 lists 0.14%."""
    return int(max(1, min(round(16 * np.sqrt(max(n, 1))), sample // 6, 8192)))


def _faiss():
    """FAISS, imported quietly (its loader logs at INFO which CPU build it tried, with a traceback line)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss
    return faiss


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """[k', d] centroids of ``points`` [m, d] (FAISS k-means, seeded; k' <= k when there are fewer points)."""
    faiss = _faiss()
    k = max(1, min(k, len(points)))
    if k == 1:
        return points.mean(0, keepdims=True).astype(np.float32)
    km = faiss.Kmeans(points.shape[1], k, niter=20, seed=seed, verbose=False,
                      max_points_per_centroid=max(256, len(points) // k + 1), min_points_per_centroid=1)
    km.train(np.ascontiguousarray(points, np.float32))
    return np.asarray(km.centroids, np.float32)


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (L2) of each point."""
    faiss = _faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    _, lab = index.search(np.ascontiguousarray(points, np.float32), 1)
    return lab[:, 0].astype(np.int64)


def _flat(z: np.ndarray) -> np.ndarray:
    """z [p, n, r+1] as [n, p * (r+1)] rows for clustering."""
    return np.ascontiguousarray(z.transpose(1, 0, 2).reshape(z.shape[1], -1))


def centre_distances(x: np.ndarray, centres_t: np.ndarray, centre_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) [q, lists, p] float32 bounds on |x_k - m_k| for transformed features x [q, c, p] and the
    centres as centres_t [p, lists, c] float32 (centre_sq = |m_k|^2 [lists, p]): one float32 product per part, and
    its rounding, at most gamma (|x_k|^2 + |m_k|^2) on the squared distance, allowed for on both sides."""
    p, _, c = centres_t.shape
    gamma = float32_gamma(c) + 1e-7  # and the float64 sum of the squared lengths
    x32 = np.asarray(x, np.float32)
    lo = np.empty((len(x), centres_t.shape[1], p), np.float32)
    hi = np.empty_like(lo)
    for k in range(p):
        xk = np.ascontiguousarray(x32[:, :, k])
        both = (xk.astype(np.float64) ** 2).sum(1)[:, None] + centre_sq[None, :, k]
        sq = both - 2 * (xk @ centres_t[k].T)
        lo[:, :, k] = np.sqrt(np.maximum(sq - gamma * both, 0.0))
        hi[:, :, k] = np.sqrt(np.maximum(sq + gamma * both, 0.0))
    return lo, hi


def _tau(x: np.ndarray, centres: np.ndarray, lab: np.ndarray, step: int = 4096) -> np.ndarray:
    """[n, p] float32 |x_k - m_k| of each track to its own list's centre, float64 differences."""
    out = np.empty((len(x), x.shape[2]), np.float32)
    for s in range(0, len(x), step):
        d = np.asarray(x[s:s + step], np.float64) - centres[lab[s:s + step]].astype(np.float64)
        out[s:s + step] = np.sqrt(np.einsum("nck,nck->nk", d, d))
    return out


@dataclass
class Hits:
    """One probe's scan: the rows whose bound is within the threshold (all of them), the rows of the
    ``shortlist`` smallest bounds among the rows looked at, and a lower bound on every row in neither."""

    within: np.ndarray
    nearest: np.ndarray
    rest_bound: float
    looked_at: int = 0


class BoundIndex:
    """The bound table of a gallery's tracks for one metric (module doc): rows sorted by list, with the track and
    identity ids of each row and the stamp of what it was built from (gallery uuid and generation)."""

    def __init__(self, metric: str, proj: np.ndarray, z: np.ndarray, tau: np.ndarray, centres_t: np.ndarray,
                 starts: np.ndarray, track_ids: np.ndarray, identity_ids: np.ndarray, n_frames: np.ndarray,
                 stamp: dict) -> None:
        self.metric, self.proj, self.z, self.tau = metric, proj, z, tau
        self.centres_t, self.starts = centres_t, starts  # centres as [p, lists, c] float32
        self.track_ids, self.identity_ids, self.n_frames = track_ids, identity_ids, n_frames
        self.stamp = stamp
        self.zn = (z * z).sum(2)  # [p, n] float32: |x_k|^2 (projection and rest together)
        self.gamma = float32_gamma(centres_t.shape[2])
        self.lists = np.repeat(np.arange(len(starts) - 1), np.diff(starts))  # list of each row
        self._centre_sq = np.einsum("kLc,kLc->Lk", centres_t.astype(np.float64), centres_t.astype(np.float64))
        ends = starts[1:]
        self.radius = np.zeros((len(starts) - 1, z.shape[0]), np.float32)  # per list and part: max tau
        full = np.flatnonzero(ends > starts[:-1])
        self.longest = np.zeros_like(self.radius)  # per list and part: max |x_k|^2 of its members
        if len(full):
            self.radius[full] = np.maximum.reduceat(tau, starts[:-1][full], axis=0)
            self.longest[full] = np.maximum.reduceat(self.zn.T, starts[:-1][full], axis=0)

    @classmethod
    def build(cls, metric: str, sample: np.ndarray, chunks, dims: int, stamp: dict, lists: int = 0,
              seed: int = 0) -> "BoundIndex":
        """sample: [m, c, p] features (a random sample of the gallery); chunks: a callable giving, each time it is
        called, the same iterable of (track ids, identity ids, n_frames, features [k, c, p]) covering the gallery
        (it is read twice: once for the coordinates and lists, once for each track's distance to its list's final
        centre); lists: how many (0: default_lists of the sample's size times 20, so a small gallery gets a few).

        The lists' centroids come from k-means on the sample's bound coordinates; every track joins its nearest
        centroid there; each list's centre is then the mean of all its members in the full space (the mean of its
        sample members alone is noisy where a list has few of them, and a noisy centre loosens every bound)."""
        ts = _transform(sample, metric)
        proj = part_projections(ts, dims)
        centroids = _kmeans(_flat(bound_coordinates(ts, proj)), lists or default_lists(20 * len(ts), len(ts)), seed)
        del ts
        k = len(centroids)
        sums = np.zeros((k,) + sample.shape[1:], np.float64)
        counts = np.zeros(k, np.int64)
        zs, labs, tids, iids, nfs = [], [], [], [], []
        for tid, iid, nf, feats in chunks():
            t = _transform(feats, metric)
            z = bound_coordinates(t, proj)
            lab = _nearest(_flat(z), centroids)
            order = np.argsort(lab, kind="stable")
            present, first = np.unique(lab[order], return_index=True)
            sums[present] += np.add.reduceat(t[order].astype(np.float64), first, axis=0)
            counts[present] += np.diff(np.append(first, len(lab)))
            zs.append(z), labs.append(lab), tids.append(np.asarray(tid)), iids.append(iid), nfs.append(nf)
        used = np.flatnonzero(counts)  # lists no track joined are dropped
        centres = (sums[used] / counts[used][:, None, None]).astype(np.float32)
        renumber = np.full(k, -1, np.int64)
        renumber[used] = np.arange(len(used))
        taus = []
        for j, (tid, _, _, feats) in enumerate(chunks()):
            if j >= len(tids) or not np.array_equal(np.asarray(tid), tids[j]):
                raise RuntimeError("the gallery changed while its index was built")
            labs[j] = renumber[labs[j]]
            taus.append(_tau(_transform(feats, metric), centres, labs[j]))
        p, r = proj.shape[0], proj.shape[1]
        if not zs:
            e = np.zeros(0, np.int64)
            return cls(metric, proj, np.zeros((p, 0, r + 1), np.float32), np.zeros((0, p), np.float32),
                       np.zeros((p, 0, sample.shape[1]), np.float32), np.zeros(1, np.int64), e, e, e, dict(stamp))
        lab_all = np.concatenate(labs)
        order = np.argsort(lab_all, kind="stable")
        starts = np.searchsorted(lab_all[order], np.arange(len(centres) + 1)).astype(np.int64)
        z = np.concatenate(zs, axis=1)
        del zs
        centres_t = np.ascontiguousarray(centres.transpose(2, 0, 1))
        del centres
        return cls(metric, proj, np.ascontiguousarray(z[:, order]), np.concatenate(taus)[order], centres_t, starts,
                   np.concatenate(tids)[order], np.concatenate(iids)[order], np.concatenate(nfs)[order], dict(stamp))

    def __len__(self) -> int:
        return len(self.track_ids)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.z, self.zn, self.tau, self.proj, self.centres_t, self.starts,
                                          self.track_ids, self.identity_ids, self.n_frames, self.radius,
                                          self.lists, self._centre_sq, self.longest)))

    def _float32_slack(self, nq: np.ndarray, n2: np.ndarray) -> np.ndarray:
        """How far below the true distance OpenGait's float32 formula can come out (module doc), for a probe of
        squared part lengths nq [p] against tracks of squared part lengths at most n2 [p, m]."""
        if self.metric == "cos":
            return np.full(n2.shape[1], 1.5 * self.gamma, np.float32)  # 3.03 c 2^-24
        return np.sqrt(self.gamma * (nq[:, None] + n2)).mean(0).astype(np.float32)

    def _row_bounds(self, zq: np.ndarray, dq: np.ndarray, rows: np.ndarray, limit: float = np.inf) -> np.ndarray:
        """The combined bound (module doc) of ``rows`` for one probe: zq [p, r+1], dq [lists, p] its distances to
        the centres. The projection bound is computed only for rows whose triangle bound is within ``limit``; the
        others keep their triangle bound (above the limit, and still a lower bound)."""
        out = np.empty(len(rows), np.float32)
        for s in range(0, len(rows), CHUNK):
            r = rows[s:s + CHUNK]
            lo, hi = dq[0][self.lists[r]], dq[1][self.lists[r]]  # [m, p]
            tau = self.tau[r]
            tri = np.maximum(np.maximum(lo - tau, tau - hi) - 1e-5 * (hi + tau), 0.0).T  # [p, m]
            slack = self._float32_slack((zq.astype(np.float64) ** 2).sum(1), self.zn[:, r])
            agg = _aggregate(tri, self.metric) - slack
            near = np.flatnonzero(agg <= limit)
            if len(near):
                rn = r[near]
                pca = part_bounds(zq, self.z[:, rn], self.zn[:, rn])
                agg[near] = _aggregate(np.maximum(pca, tri[:, near]), self.metric) - slack[near]
            out[s:s + CHUNK] = np.maximum(agg, 0.0)
        return out

    def bounds(self, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per row, per list) the lower bounds on one probe's [c, p] distance: every row's combined bound and
        every list's bound on its members (inf for an empty list)."""
        tq = _transform(probe[None], self.metric)
        lo, hi = centre_distances(tq, self.centres_t, self._centre_sq)
        dq = (lo[0], hi[0])
        zq = bound_coordinates(tq, self.proj)[:, 0]
        return self._row_bounds(zq, dq, np.arange(len(self))), self._list_bounds(dq, zq)

    def _list_bounds(self, dq: np.ndarray, zq: np.ndarray) -> np.ndarray:
        lo = dq[0]
        outer = lo - self.radius - 1e-5 * (lo + self.radius)  # [L, p]: no member is nearer than this
        slack = self._float32_slack((zq.astype(np.float64) ** 2).sum(1), self.longest.T)
        out = _aggregate(np.maximum(outer, 0.0).T, self.metric) - slack
        out[np.diff(self.starts) == 0] = np.inf
        return out

    def query(self, probes: np.ndarray, threshold: float, shortlist: int, min_frames: int = 0) -> list[Hits]:
        """Per probe [q, c, p]: every row (with at least ``min_frames`` silhouettes) whose bound is within the
        threshold, and the ``shortlist`` of smallest bound among the lists looked at."""
        tq = _transform(probes, self.metric)
        zq = bound_coordinates(tq, self.proj)  # [p, q, r+1]
        lo, hi = centre_distances(tq, self.centres_t, self._centre_sq)  # [q, L, p] each
        # the bounds already allow for the float32 distance's rounding (module doc); 1e-6 more for the threshold's
        limit = float(threshold) * (1 + 1e-6) + 1e-6
        usable = self.n_frames >= min_frames
        sizes = np.diff(self.starts)
        out = []
        for i in range(len(probes)):
            dq = (lo[i], hi[i])
            list_bound = self._list_bounds(dq, zq[:, i])
            order = np.argsort(list_bound, kind="stable")
            take = int(np.searchsorted(list_bound[order], limit, side="right"))
            if shortlist > 0:  # and further in bound order until the shortlist can be filled
                need = np.searchsorted(np.cumsum(sizes[order]), shortlist + 1) + 1
                take = max(take, min(int(need), len(order)))
            chosen = order[:take]
            rows = (np.concatenate([np.arange(self.starts[c], self.starts[c + 1]) for c in chosen])
                    if take else np.zeros(0, np.int64))
            bound = self._row_bounds(zq[:, i], dq, rows, limit)
            bound[~usable[rows]] = np.inf
            within = rows[bound <= limit]
            rest = float(list_bound[order[take]]) if take < len(order) else float("inf")
            k = min(shortlist, len(rows))
            if k:
                part = np.argpartition(bound, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
                part = part[np.argsort(bound[part], kind="stable")]
                part = part[np.isfinite(bound[part])]
                if len(rows) > k:
                    others = np.ones(len(rows), bool)
                    others[part] = False
                    rest = min(rest, float(bound[others].min()))
                nearest = rows[part]
            else:
                nearest = np.zeros(0, np.int64)
                if len(rows):
                    rest = min(rest, float(bound.min()))
            out.append(Hits(within, nearest, rest, len(rows)))
        return out

    # -- on disk: one .npz, written under a unique temporary name and moved into place (os.replace) ------------
    def save(self, path: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, proj=self.proj, z=self.z, tau=self.tau, centres_t=self.centres_t, starts=self.starts,
                         track_ids=self.track_ids, identity_ids=self.identity_ids,
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
                return cls(str(f["metric"]), f["proj"], f["z"], f["tau"], f["centres_t"], f["starts"],
                           f["track_ids"], f["identity_ids"], f["n_frames"], stamp)
        except (OSError, ValueError, KeyError, EOFError):
            return None
