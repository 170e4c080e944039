"""Probe-to-gallery matching: OpenGait's part-averaged distance, then a one-to-one assignment per probe video."""
from __future__ import annotations

import logging

import numpy as np

from .config import MatchConfig
from .errors import UserError
from .records import Decision, Embedding

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


class Matcher:
    """Decides, for every probe track, which gallery track it is (or unknown / too short)."""

    def __init__(self, config: MatchConfig) -> None:
        if config.metric not in METRICS:  # "auto" is resolved from the gait model before a Matcher is built
            raise UserError(f"unknown match metric {config.metric!r} (expected euc or cos)")
        self.config = config

    def __call__(self, probes: list[Embedding], gallery: list[Embedding]) -> list[Decision]:
        """One Decision per probe track, in the order of ``probes``.

        Within each probe video the probe tracks are assigned one-to-one to gallery tracks (all gallery videos
        together) by minimum total distance (Hungarian). An assigned pair beyond the threshold, or a probe left
        without a partner, is "unknown"; a track with fewer than min_frames silhouettes is "too_short".
        """
        from scipy.optimize import linear_sum_assignment

        cfg = self.config
        usable_gallery = [g for g in gallery if g.n_frames >= cfg.min_frames]
        for g in gallery:
            if g.n_frames < cfg.min_frames:
                log.info("gallery %s track %d left out: %d silhouettes < min_frames %d",
                         g.video, g.track_id, g.n_frames, cfg.min_frames)
        g_feats = np.stack([g.feature for g in usable_gallery]) if usable_gallery else None

        decisions: list[Decision | None] = [None] * len(probes)
        videos = list(dict.fromkeys(p.video for p in probes))
        for video in videos:
            rows = []
            for i, p in enumerate(probes):
                if p.video != video:
                    continue
                if p.n_frames < cfg.min_frames:
                    decisions[i] = Decision(p.video, p.track_id, None, None, None, "too_short", [])
                elif g_feats is None:
                    decisions[i] = Decision(p.video, p.track_id, None, None, None, "unknown", [])
                else:
                    rows.append(i)
            if not rows:
                continue
            dist = distance_matrix(np.stack([probes[i].feature for i in rows]), g_feats, cfg.metric)
            assigned = dict(zip(*linear_sum_assignment(dist)))
            for r, i in enumerate(rows):
                p = probes[i]
                order = np.argsort(dist[r], kind="stable")
                ranking = [(usable_gallery[j].video, usable_gallery[j].track_id, float(dist[r, j])) for j in order]
                col = assigned.get(r)
                if col is None:  # more probe tracks than gallery tracks: no partner left
                    decisions[i] = Decision(p.video, p.track_id, None, None, float(dist[r, order[0]]), "unknown",
                                            ranking)
                    continue
                d = float(dist[r, col])
                if d > cfg.threshold:
                    decisions[i] = Decision(p.video, p.track_id, None, None, d, "unknown", ranking)
                else:
                    g = usable_gallery[col]
                    decisions[i] = Decision(p.video, p.track_id, g.video, g.track_id, d, "match", ranking)
        return decisions  # type: ignore[return-value]  # every slot is filled above
