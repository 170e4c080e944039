"""Probe-to-gallery decisions: OpenGait's part-averaged distance, gallery identities, and the decision rule.

The rule (README, "How a probe person is decided"), for one threshold t:
  1. distance(probe track, identity) = the smallest distance to any of the identity's tracks (multi-shot);
  2. a probe track may only take an identity at distance <= t (the others are not candidates at all);
  3. two probe tracks of the same video whose frame ranges overlap never take the same identity; tracks that do
     not overlap in time may;
  4. among the assignments that respect 2 and 3, the one that matches the most probe tracks, and of those the one
     with the smallest total distance, is taken; so a track is unknown only when every candidate it has went to a
     track seen at the same time (reason "taken"), or it has no candidate ("no_candidate"), or there is no usable
     gallery identity ("no_gallery"). Tracks with fewer than min_frames silhouettes are "too_short".
"""
from __future__ import annotations

import logging

import numpy as np

from allinone.config import MatchConfig
from allinone.errors import UserError
from allinone.records import Decision, Embedding, Identity

log = logging.getLogger(__name__)

METRICS = ("euc", "cos")


def distance_matrix(probe: np.ndarray, gallery: np.ndarray, metric: str = "euc") -> np.ndarray:
    """OpenGait's cuda_dist on CPU, float32. probe [n, c, p], gallery [m, c, p] → [n, m].

    euc: mean over parts of sqrt(relu(|x|^2 + |y|^2 - 2 x.y)) per part.
    cos: 1 - mean over parts of x.y, with x and y L2-normalised over the channel dim (per part).
    """
    import torch
    import torch.nn.functional as F

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = torch.as_tensor(np.asarray(probe), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(gallery), dtype=torch.float32)
    if x.dim() != 3 or y.dim() != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"probe [n, c, p] and gallery [m, c, p] must agree, got {tuple(x.shape)} and {tuple(y.shape)}")
    parts = x.shape[2]
    if metric == "cos":
        x = F.normalize(x, p=2, dim=1)
        y = F.normalize(y, p=2, dim=1)
    xp = x.permute(2, 0, 1)  # [p, n, c]
    yp = y.permute(2, 1, 0)  # [p, c, m]
    inner = torch.bmm(xp, yp)  # [p, n, m]
    if metric == "cos":
        return (1 - inner.sum(0) / parts).numpy()
    sq = (xp ** 2).sum(2).unsqueeze(2) + (yp ** 2).sum(1).unsqueeze(1) - 2 * inner
    return (torch.sqrt(F.relu(sq)).sum(0) / parts).numpy()


def identity_distances(probes: list[Embedding], identities: list[Identity], metric: str) -> np.ndarray:
    """[n probes, k identities]: for each identity the smallest distance to any of its tracks."""
    if not probes or not identities:
        return np.zeros((len(probes), len(identities)), np.float32)
    members = [m for ident in identities for m in ident.members]
    owner = np.repeat(np.arange(len(identities)), [len(ident.members) for ident in identities])
    d = distance_matrix(np.stack([p.feature for p in probes]), np.stack([m.feature for m in members]), metric)
    out = np.full((len(probes), len(identities)), np.inf, np.float32)
    for k in range(len(identities)):
        out[:, k] = d[:, owner == k].min(axis=1)
    return out


def _components(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def assign_identities(dist: np.ndarray, candidate: np.ndarray, spans: list[tuple[int, int]]) -> list[int | None]:
    """The decision rule's assignment for the tracks of one probe video.

    dist, candidate: [n, k] distances and which pairs are within the threshold; spans: each track's (first, last)
    frame. Returns, per track, the identity column it takes or None. Tracks whose spans overlap never share a column;
    the assignment matches as many tracks as possible and, among those, has the smallest total distance (two exact
    integer programs, solved by HiGHS through scipy.optimize.milp, per group of tracks linked by overlaps).
    """
    n = len(spans)
    out: list[int | None] = [None] * n
    overlap = [(i, j) for i in range(n) for j in range(i + 1, n)
               if spans[i][0] <= spans[j][1] and spans[j][0] <= spans[i][1]
               and candidate[i].any() and candidate[j].any()]
    for group in _components(n, overlap):
        pairs = [(i, k) for i in group for k in np.flatnonzero(candidate[i])]
        if not pairs:
            continue
        if len(group) == 1:
            i = group[0]
            ks = np.flatnonzero(candidate[i])
            out[i] = int(ks[np.argsort(dist[i, ks], kind="stable")[0]])
            continue
        for (i, k), x in zip(pairs, _solve_group(group, pairs, dist, spans)):
            if x:
                out[i] = int(k)
    return out


def _solve_group(group: list[int], pairs: list[tuple[int, int]], dist: np.ndarray,
                 spans: list[tuple[int, int]]) -> list[bool]:
    """0/1 choice per (track, identity) pair: at most one identity per track, at most one track per identity
    among tracks visible at one moment; most matches first, then least total distance."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    m = len(pairs)
    rows: list[np.ndarray] = []
    for i in group:  # one identity per track
        rows.append(np.array([1.0 if p[0] == i else 0.0 for p in pairs]))
    # Tracks that overlap pairwise share a moment (intervals): the tracks visible when one of them starts form
    # the cliques of the overlap graph; one track per identity and clique.
    cliques = {tuple(sorted(j for j in group if spans[j][0] <= spans[s][0] <= spans[j][1])) for s in group}
    for clique in cliques:
        if len(clique) < 2:
            continue
        for k in {p[1] for p in pairs}:
            row = np.array([1.0 if (p[1] == k and p[0] in clique) else 0.0 for p in pairs])
            if row.sum() > 1:
                rows.append(row)
    a = np.stack(rows)
    limits = LinearConstraint(a, -np.inf, 1.0)
    integral, bounds = np.ones(m), Bounds(0, 1)
    options = {"mip_rel_gap": 0.0}
    most = milp(-np.ones(m), constraints=[limits], integrality=integral, bounds=bounds, options=options)
    count = round(-most.fun)
    cost = np.array([float(dist[i, k]) for i, k in pairs])
    best = milp(cost, constraints=[limits, LinearConstraint(np.ones((1, m)), count, count)],
                integrality=integral, bounds=bounds, options=options)
    if not best.success:  # cannot happen: `most`'s solution is feasible here
        raise RuntimeError(f"identity assignment failed: {best.message}")
    return [bool(round(x)) for x in best.x]


class Matcher:
    """Decides, for every probe track, which gallery identity it is, or why it is unknown (the module's rule)."""

    def __init__(self, config: MatchConfig) -> None:
        if config.metric not in METRICS:  # "auto" is resolved from the gait model before a Matcher is built
            raise UserError(f"unknown match metric {config.metric!r} (expected euc or cos)")
        self.config = config

    def usable(self, identities: list[Identity]) -> list[Identity]:
        """The identities with at least one track of min_frames silhouettes (only those tracks kept)."""
        out = []
        for ident in identities:
            members = tuple(m for m in ident.members if m.n_frames >= self.config.min_frames)
            if members:
                out.append(Identity(ident.name, members, ident.key))
        return out

    def __call__(self, probes: list[Embedding], identities: list[Identity], threshold: float) -> list[Decision]:
        """One Decision per probe track, in the order of ``probes``."""
        cfg = self.config
        gallery = self.usable(identities)
        names = [g.name for g in gallery]
        decisions: list[Decision | None] = [None] * len(probes)
        for video in dict.fromkeys(p.video for p in probes):
            rows = []
            for i, p in enumerate(probes):
                if p.video != video:
                    continue
                if p.n_frames < cfg.min_frames:
                    decisions[i] = Decision(p.video, p.track_id, "too_short", None, None, "too_few_silhouettes", [])
                elif not gallery:
                    decisions[i] = Decision(p.video, p.track_id, "unknown", None, None, "no_gallery", [])
                else:
                    rows.append(i)
            if not rows:
                continue
            dist = identity_distances([probes[i] for i in rows], gallery, cfg.metric)
            candidate = dist <= threshold
            spans = [(probes[i].first_frame, probes[i].last_frame) for i in rows]
            chosen = assign_identities(dist, candidate, spans)
            for r, i in enumerate(rows):
                p = probes[i]
                order = np.argsort(dist[r], kind="stable")
                ranking = [(names[j], float(dist[r, j])) for j in order]
                k = chosen[r]
                if k is not None:
                    decisions[i] = Decision(p.video, p.track_id, "match", names[k], float(dist[r, k]), None, ranking)
                else:
                    reason = "taken" if candidate[r].any() else "no_candidate"
                    decisions[i] = Decision(p.video, p.track_id, "unknown", None, float(dist[r, order[0]]), reason,
                                            ranking)
        return decisions  # type: ignore[return-value]  # every slot is filled above
