"""The decide step that the runner and ``rematch`` share: probe tracks, identities and a threshold → one Decision
per probe track, in the tracks' order."""
from __future__ import annotations

from dataclasses import dataclass

from allinone.decide.threshold import Threshold, without_threshold
from allinone.records import Decision, Embedding, Identity


@dataclass
class Decided:
    """A run's decisions and what they were made with."""

    identities: list[Identity]
    usable: list[Identity]
    threshold: Threshold
    decisions: list[Decision]


def decide_tracks(matcher, probes: list[Embedding], tracks: list[tuple[str, int]], identities: list[Identity],
                  threshold: Threshold) -> list[Decision]:
    """One Decision per (video, track) of ``tracks`` (every probe track, in order): the rule over the embedded
    ``probes``; a track without a single usable silhouette never got an embedding and is too short to tell. With
    no threshold (basis "none") every decision is the nearest identity, without a match/unknown verdict."""
    decided = {(d.probe_video, d.probe_track): d for d in matcher(probes, identities, threshold.value)}
    decisions = [decided.get(key) or Decision.too_short(*key) for key in tracks]
    return without_threshold(decisions) if threshold.basis == "none" else decisions


__all__ = ["Decided", "decide_tracks"]
