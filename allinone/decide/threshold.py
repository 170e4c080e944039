"""The match threshold and what backs it: given by the user, chosen from impostor evidence for a target
false-positive identification rate (auto), an old calibration file's number, or none at all.

auto: the impostor evidence of the run (decide/impostors.py: tracks seen together, pairs of different gallery
identities) pooled with a calibration file's impostor distances, and the threshold for ``target_fpir`` over the
gallery's N embeddings (decide/fpir.py). Every basis states the estimated FPIR at the threshold used with its 95%
interval and the pairs it rests on, or that there is no evidence. With no evidence and no threshold given, there is
no threshold (basis ``none``): nothing is matched and every probe is unknown with reason ``no_threshold_evidence``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from allinone.decide.fpir import LEVEL, Evidence, Source, independent_people
from allinone.errors import UserError
from allinone.records import Decision, Embedding, Identity

log = logging.getLogger(__name__)

METRIC_RANGE = {"euc": (0.0, math.inf), "cos": (0.0, 2.0)}
BASES = ("user", "auto", "calibrated", "none")
NOTHING = -1.0  # the value of basis none: no distance is within it
INDEPENDENCE = ("disjoint pairs of people (each person in at most one pair): a gallery identity is one person, however "
                "many tracks; tracks of one video seen together are different people; one person may walk in several "
                "videos, so the count is the largest of the gallery's and each video's own; a calibration file's "
                "count is of its dataset's people the same way")
ASSUMPTION = ("FPIR = 1 - (1 - F)^N: a non-mated probe's N comparisons taken as independent, F the per-pair "
              "impostor rate")


@dataclass(frozen=True)
class Threshold:
    """A threshold, where it came from, and what backs it (recorded in run.json)."""

    value: float
    basis: str  # user | auto | calibrated (an old file's number) | none
    detail: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"threshold basis must be one of {BASES}, got {self.basis!r}")
        if self.basis == "none":
            if self.value != NOTHING:
                raise ValueError("basis none has no threshold")
        elif not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"threshold must be finite and >= 0, got {self.value!r}")

    def to_json(self) -> dict:
        return {"value": None if self.basis == "none" else float(self.value), "basis": self.basis, **self.detail}


def check_threshold(value: float, metric: str) -> None:
    """A UserError unless ``value`` is a finite, non-negative distance in the metric's range (cos: [0, 2])."""
    if not math.isfinite(value):
        raise UserError(f"--threshold must be a finite number, got {value}")
    if value < 0:
        raise UserError(f"--threshold must be >= 0 (it is a distance), got {value}")
    lo, hi = METRIC_RANGE.get(metric, (0.0, math.inf))
    if value > hi:
        raise UserError(f"--threshold {value} is outside the {metric} distance range [{lo:g}, {hi:g}]")


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



def _g(x: float) -> str:
    return f"{x:.3g}"


def people_of_pairs(keys: list[tuple], identity_of: dict[tuple, int]) -> list[tuple]:
    """(person a, person b, scope) of each impostor pair of track keys (INDEPENDENCE): a gallery member is its
    identity; two gallery members are of the scope "gallery", any other pair of the video the two were seen in."""
    out = []
    for a, b in keys:
        pa = ("identity", identity_of[a]) if a in identity_of else ("track", a)
        pb = ("identity", identity_of[b]) if b in identity_of else ("track", b)
        scope = "gallery" if pa[0] == pb[0] == "identity" else ("video",) + tuple(a[:-1])
        out.append((pa, pb, scope))
    return out


def gather_evidence(embeddings: list[Embedding], together: list[list], identities: list[Identity], metric: str,
                    min_overlap: int, min_frames: int, calibration=None) -> tuple[Evidence, dict]:
    """The pooled impostor evidence of a run (its pairs and a calibration file's distribution) and its account
    for run.json."""
    from allinone.decide.impostors import run_pairs

    rp = run_pairs(embeddings, together, identities, metric, min_overlap, min_frames)
    sources = []
    account: dict = {"sources": {}, "near_duplicates_excluded": rp.duplicates, "independence": INDEPENDENCE,
                     "seen_together": together}
    if len(rp.distances):
        n_eff = independent_people(people_of_pairs(rp.keys, rp.identity_of))
        sources.append(Source("run", np.sort(rp.distances), len(rp.distances), n_eff))
        account["sources"]["seen_together"] = rp.seen_together
        account["sources"]["gallery_identities"] = rp.gallery
        account["sources"]["run_independent"] = n_eff
    cal = getattr(calibration, "source", None)
    if cal is not None:
        sources.append(cal)
        account["sources"]["calibration"] = {"file": calibration.detail.get("file"), "pairs": cal.count,
                                             "independent": cal.independent,
                                             "found": calibration.detail.get("found", "given")}
    ev = Evidence(sources)
    account["pairs"], account["independent_pairs"] = ev.n, ev.n_eff
    return ev, account


def resolve_threshold(value: float | None, metric: str, embeddings: list[Embedding], identities: list[Identity],
                      together: list[list], *, target_fpir: float, min_overlap: int, min_frames: int,
                      calibration=None, gallery_size: int | None = None) -> Threshold:
    """The run's threshold (module doc). ``identities``: the usable gallery identities (N = their tracks, unless
    ``gallery_size`` says N: a gallery file too large to load, whose identities are not all given);
    ``together``: CoVisibility rows of the run's videos; ``calibration``: a decide.calibration.Calibration."""
    if value is not None:
        check_threshold(value, metric)
    n_gallery = sum(len(i.members) for i in identities) if gallery_size is None else gallery_size
    ev, account = gather_evidence(embeddings, together, identities, metric, min_overlap, min_frames, calibration)
    detail: dict = {"target_fpir": target_fpir, "gallery_size": n_gallery, "assumption": ASSUMPTION,
                    "evidence": account}
    legacy = getattr(calibration, "threshold", None) if getattr(calibration, "source", None) is None else None
    rests = f"{ev.n} impostor pair(s), {ev.n_eff} independent (disjoint pairs of people)"

    def fpir_entry(est, supported=None) -> dict:
        e = {"estimate": est.fpir, "ci95": [est.low, est.high], "per_pair_rate": est.per_pair, "level": LEVEL}
        if supported is not None:
            e["supported"] = supported
        return e

    def said(t: float, est) -> str:
        return (f"estimated FPIR {_g(est.fpir)} (95% CI {_g(est.low)}-{_g(est.high)}) over {n_gallery} gallery "
                f"track(s) at {_g(t)}, from {rests}")

    if value is not None or legacy is not None:
        t = float(value if value is not None else legacy)
        basis = "user" if value is not None else "calibrated"
        if legacy is not None and value is None:
            detail["file"] = calibration.detail.get("file")
        if ev and n_gallery:
            est = ev.estimate(t, n_gallery)[0]
            detail["fpir"] = fpir_entry(est)
            detail["statement"] = f"{_g(t)} ({'given' if basis == 'user' else 'old calibration file'}): " + said(t, est)
        else:
            detail["fpir"] = None
            detail["statement"] = (f"{_g(t)} ({'given' if basis == 'user' else 'old calibration file'}): no impostor "
                                   "evidence, so its FPIR is unknown")
        log.info("threshold %s", detail["statement"])
        return Threshold(t, basis, detail)
    if not ev or not n_gallery:
        detail["fpir"] = None
        detail["statement"] = ("no threshold: no impostor evidence (no two people seen together, fewer than two "
                               "gallery identities, no calibration file), so nothing is matched and every probe "
                               "is unknown (no_threshold_evidence); give --threshold D or --calibration FILE"
                               if n_gallery else "no threshold: the gallery has no usable identity")
        log.warning("%s", detail["statement"])
        return Threshold(NOTHING, "none", detail)
    est, ok = ev.choose(target_fpir, n_gallery)
    detail["fpir"] = fpir_entry(est, ok)
    if ok:
        detail["statement"] = f"{_g(est.threshold)} for FPIR <= {_g(target_fpir)}: " + said(est.threshold, est)
        log.info("threshold %s", detail["statement"])
    else:
        need = ev.pairs_needed(target_fpir, n_gallery)
        detail["pairs_needed"] = need
        detail["statement"] = (f"{_g(est.threshold)}, but the evidence cannot show FPIR <= {_g(target_fpir)}: "
                               + said(est.threshold, est) + f"; about {need} independent pairs would be needed")
        log.warning("threshold %s", detail["statement"])
    return Threshold(est.threshold, "auto", detail)


def without_threshold(decisions: list[Decision]) -> list[Decision]:
    """Decisions made under basis none: the unknowns (nothing was within the threshold) get the reason
    ``no_threshold_evidence``."""
    from dataclasses import replace

    return [replace(d, reason="no_threshold_evidence") if d.status == "unknown" and d.reason == "no_candidate"
            else d for d in decisions]
