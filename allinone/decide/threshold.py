"""The match threshold and its basis: given by the user, derived from the videos (auto), or the metric's default.

auto: two tracks of one video that are seen in the same frames are certainly two different people, so their
distance is a known impostor distance. With the impostor distances sorted d1 <= d2 <= ... (n of them) and a
target false-match rate x, k = floor(x * n); the threshold is d_k, or just below d1 when k = 0 (no impostor
accepted). It rests on n pairs, which run.json records; with none, the metric's default is used and a warning says
that nothing supports it.

default (uncalibrated, geometric): for cos, 0.3 (a mean per-part angle of about 45 degrees); for euc, the same
angle for vectors of the gallery's own scale: 2 sin(22.5 deg) = 0.765 times the median per-part norm of the gallery
embeddings. Neither is measured on a released checkpoint; calibrate on footage of your own (README).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from allinone.errors import UserError
from allinone.records import Embedding

log = logging.getLogger(__name__)

METRIC_RANGE = {"euc": (0.0, math.inf), "cos": (0.0, 2.0)}
DEFAULT_COS = 0.3
EUC_ANGLE_FACTOR = 2 * math.sin(math.radians(22.5))  # chord of a 45-degree angle on the unit sphere
BASES = ("user", "calibrated", "auto", "default")


@dataclass(frozen=True)
class Threshold:
    """A threshold, where it came from, and what backs it (recorded in run.json)."""

    value: float
    basis: str  # user | calibrated | auto | default
    detail: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"threshold basis must be one of {BASES}, got {self.basis!r}")
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"threshold must be finite and >= 0, got {self.value!r}")

    def to_json(self) -> dict:
        return {"value": float(self.value), "basis": self.basis, **self.detail}


def check_threshold(value: float, metric: str) -> None:
    """A UserError unless ``value`` is a finite, non-negative distance in the metric's range (cos: [0, 2])."""
    if not math.isfinite(value):
        raise UserError(f"--threshold must be a finite number, got {value}")
    if value < 0:
        raise UserError(f"--threshold must be >= 0 (it is a distance), got {value}")
    lo, hi = METRIC_RANGE.get(metric, (0.0, math.inf))
    if value > hi:
        raise UserError(f"--threshold {value} is outside the {metric} distance range [{lo:g}, {hi:g}]")


def impostor_pairs(embeddings: list[Embedding], min_overlap: int, min_frames: int) -> list[tuple[int, int]]:
    """Index pairs (a, b), a < b, of tracks of one video seen together for at least ``min_overlap`` frames (their
    frame ranges share that many frames), each with at least ``min_frames`` silhouettes."""
    out = []
    for a in range(len(embeddings)):
        ea = embeddings[a]
        if ea.n_frames < min_frames:
            continue
        for b in range(a + 1, len(embeddings)):
            eb = embeddings[b]
            if eb.n_frames < min_frames or ea.video != eb.video:
                continue
            shared = min(ea.last_frame, eb.last_frame) - max(ea.first_frame, eb.first_frame) + 1
            if shared >= min_overlap:
                out.append((a, b))
    return out


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The threshold that accepts at most ``far`` of the impostor distances: d_k, k = floor(far * n), or the
    largest float below d_1 when k = 0."""
    d = np.sort(np.asarray(impostor, np.float64))
    if not len(d):
        raise ValueError("no impostor distances")
    k = int(math.floor(far * len(d)))
    if k == 0:
        return float(np.nextafter(d[0], -np.inf)) if d[0] > 0 else 0.0
    return float(d[k - 1])


def default_threshold(metric: str, gallery: list[Embedding]) -> tuple[float, dict]:
    """The metric's uncalibrated default (module doc) and how it was made."""
    if metric == "cos":
        return DEFAULT_COS, {"rule": "cos 0.3 (mean per-part angle ~45 deg)"}
    norms = [float(np.linalg.norm(g.feature, axis=0).mean()) for g in gallery]
    if not norms:
        return 0.0, {"rule": "no gallery embeddings: nothing can match"}
    scale = float(np.median(norms))
    return EUC_ANGLE_FACTOR * scale, {"rule": "0.765 x median per-part norm of the gallery embeddings",
                                      "gallery_scale": round(scale, 6)}


def resolve_threshold(value: float | None, metric: str, embeddings: list[Embedding], gallery: list[Embedding],
                      *, far: float, min_overlap: int, min_frames: int,
                      calibrated: Threshold | None = None) -> Threshold:
    """The run's threshold: ``value`` as given (basis user), else a calibration's, else the auto rule over all
    tracks of the run, falling back to the default when no impostor pair exists."""
    from allinone.decide.match import distance_matrix

    if value is not None:
        check_threshold(value, metric)
        return Threshold(float(value), "user")
    if calibrated is not None:
        return calibrated
    pairs = impostor_pairs(embeddings, min_overlap, min_frames)
    if pairs:
        d = np.array([float(distance_matrix(embeddings[a].feature[None], embeddings[b].feature[None], metric)[0, 0])
                      for a, b in pairs])
        t = threshold_at_far(d, far)
        detail = {"impostor_pairs": len(pairs), "far": far, "nearest_impostor": round(float(d.min()), 6)}
        if len(pairs) * far < 1:
            log.warning("threshold %.4g (auto) rests on %d impostor pair(s) (people seen together); a false-match "
                        "rate of %g needs at least %d: treat it as rough, or calibrate", t, len(pairs), far,
                        math.ceil(1 / far))
        return Threshold(t, "auto", detail)
    t, detail = default_threshold(metric, gallery)
    log.warning("no two people were seen together in these videos, so nothing supports a threshold: using the "
                "uncalibrated %s default %.4g (%s); pass --threshold after calibrating", metric, t, detail["rule"])
    return Threshold(t, "default", detail)
