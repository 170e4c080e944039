"""Probe-to-gallery decisions: distances to gallery identities (decide/distance.py per track), and the decision rule.

The rule (README, "How a probe person is decided"), for one threshold t:
  1. distance(probe track, identity) = the smallest distance to any of the identity's tracks (multi-shot);
  2. a probe track may only take an identity at distance <= t (the others are not candidates at all);
  3. two probe tracks of the same video whose frame ranges overlap never take the same identity; tracks that do
     not overlap in time may;
  4. among the assignments that respect 2 and 3, the one with the largest total margin sum(t - d) over its matches
     is taken (decide/assign.py: sparse, per group of interacting tracks, exact); so a track is unknown only when
     its candidates went to tracks seen at the same time with a larger total margin (reason "taken"), or it has
     no candidate ("no_candidate"), or there is no usable gallery identity ("no_gallery"). Tracks with fewer than
     min_frames silhouettes are "too_short".
"""
from __future__ import annotations

import logging

import numpy as np

from allinone.config import MatchConfig
from allinone.decide.assign import assign_identities
from allinone.decide.distance import METRICS, distance_matrix
from allinone.errors import UserError
from allinone.records import Decision, Embedding, Identity

log = logging.getLogger(__name__)

def identity_distances(probes: list[Embedding], identities: list[Identity], metric: str) -> np.ndarray:
    """[n probes, k identities]: for each identity the smallest distance to any of its tracks."""
    if not probes or not identities:
        return np.zeros((len(probes), len(identities)), np.float32)
    members = [m for ident in identities for m in ident.members]
    counts = np.array([len(ident.members) for ident in identities])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gallery = np.stack([m.feature for m in members])
    out = np.empty((len(probes), len(identities)), np.float32)
    # in chunks of probes, so the [parts, probes, members] products stay within ~64 MB however many tracks
    step = max(1, (1 << 24) // max(1, len(members) * gallery.shape[2]))
    for a in range(0, len(probes), step):
        d = distance_matrix(np.stack([p.feature for p in probes[a:a + step]]), gallery, metric)
        out[a:a + step] = np.minimum.reduceat(d, starts, axis=1)
    return out


def margin_pairs(dist: np.ndarray, threshold: float, allowed: np.ndarray | None = None):
    """The gated candidate pairs and their weights t - d: (rows, cols, weight). ``allowed``: an optional [n, k]
    mask of pairs that may be considered at all (the live path blocks identities held by closed tracks)."""
    cand = dist <= threshold
    if allowed is not None:
        cand &= allowed
    rows, cols = np.nonzero(cand)
    # in float64: with float32 distances numpy would compute t - d in float32, where a large t (1e9) rounds every
    # margin to the same number
    return rows, cols, float(threshold) - dist[rows, cols].astype(np.float64)


def _nearest_member(probe: Embedding, identity: Identity, metric: str) -> tuple[str, int]:
    """The identity's track at the probe's distance to it (the minimum identity_distances took)."""
    d = distance_matrix(probe.feature[None], np.stack([m.feature for m in identity.members]), metric)[0]
    m = identity.members[int(np.argmin(d))]
    return m.video, m.track_id


class Matcher:
    """Decides, for every probe track, which gallery identity it is, or why it is unknown (the module's rule)."""

    def __init__(self, config: MatchConfig) -> None:
        if config.metric not in METRICS:  # "auto" is resolved from the gait model before a Matcher is built
            raise UserError(f"unknown match metric {config.metric!r} (expected euc or cos)")
        self.config = config
        self.solved: list[dict] = []  # per probe video of the last call whose integer program ran: how it went
        self.distances: dict[str, tuple[list[int], np.ndarray]] = {}  # of the last call (__call__)
        self.names: list[str] = []

    def usable(self, identities: list[Identity]) -> list[Identity]:
        """The identities with at least one track of min_frames silhouettes (only those tracks kept)."""
        out = []
        for ident in identities:
            members = tuple(m for m in ident.members if m.n_frames >= self.config.min_frames)
            if members:
                out.append(Identity(ident.name, members, ident.key))
        return out

    def __call__(self, probes: list[Embedding], identities: list[Identity], threshold: float,
                 blocked: list[set[str]] | None = None) -> list[Decision]:
        """One Decision per probe track, in the order of ``probes``. ``blocked``: per probe, identity names it may
        not take (held by a track already closed that overlaps it); a track whose only candidates are blocked is
        "taken". Afterwards ``distances`` holds, per probe video, its decided track ids and their [tracks,
        identities] distances to ``names`` (the usable identities), for run.json's binary file beside it."""
        cfg = self.config
        gallery = self.usable(identities)
        names = [g.name for g in gallery]
        decisions: list[Decision | None] = [None] * len(probes)
        self.solved, self.distances, self.names = [], {}, names
        for video in dict.fromkeys(p.video for p in probes):
            rows = []
            for i, p in enumerate(probes):
                if p.video != video:
                    continue
                if p.n_frames < cfg.min_frames:
                    decisions[i] = Decision.too_short(p.video, p.track_id)
                elif not gallery:
                    decisions[i] = Decision(p.video, p.track_id, "unknown", None, None, "no_gallery", [])
                else:
                    rows.append(i)
            if rows:
                self._video(video, [probes[i] for i in rows], rows, gallery, threshold, blocked, decisions)
        return decisions  # type: ignore[return-value]  # every slot is filled

    def _video(self, video: str, probes: list[Embedding], rows: list[int], gallery: list[Identity],
               threshold: float, blocked, decisions: list) -> None:
        """Decide one probe video's tracks (``probes``, at ``rows`` of the call's order) into ``decisions``."""
        cfg, names = self.config, self.names
        dist = identity_distances(probes, gallery, cfg.metric)
        self.distances[video] = ([p.track_id for p in probes], dist)
        candidate = dist <= threshold
        allowed = None
        if blocked is not None and any(blocked[i] for i in rows):
            allowed = np.array([[n not in blocked[i] for n in names] for i in rows], dtype=bool)
        spans = [(p.first_frame, p.last_frame) for p in probes]
        solve: dict = {}
        chosen = assign_identities(*margin_pairs(dist, threshold, allowed), spans, seconds=cfg.solve_seconds,
                                   solve=solve)
        if solve:
            self.solved.append({"video": video, **solve})
            if solve["status"] != "optimal":
                log.warning("%s: the assignment's integer program stopped at its time limit (%g s); the best "
                            "assignment found is within %s of the optimum", video, cfg.solve_seconds,
                            "an unknown gap" if solve["gap"] is None else f"{solve['gap']:.1%}")
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :cfg.ranking_kept]
        for r, (i, p) in enumerate(zip(rows, probes)):
            ranking = [(names[j], float(dist[r, j])) for j in nearest[r]]
            k = chosen[r]
            if k is not None:
                decisions[i] = Decision(p.video, p.track_id, "match", names[k], float(dist[r, k]), None, ranking,
                                        _nearest_member(p, gallery[k], cfg.metric))
            else:
                reason = "taken" if candidate[r].any() else "no_candidate"
                decisions[i] = Decision(p.video, p.track_id, "unknown", None, float(dist[r, nearest[r, 0]]), reason,
                                        ranking)
