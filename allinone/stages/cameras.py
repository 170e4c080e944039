"""What several cameras in one loop share: who is held where and when, so one identity is never decided for two
cameras that cannot see one person at the same moment."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class CrossCameras:
    """Matches by camera, in wall time (unix seconds): each open track's current match and closed tracks' final
    ones. ``overlaps``: camera pairs whose views overlap (one person can be on both at once); every other pair
    cannot see one person at the same moment, so an identity held on one blocks it on the other while their wall
    spans intersect. Closed matches are forgotten ``keep_s`` seconds after they ended (no open track began before
    then: tracks are far shorter)."""

    overlaps: frozenset = frozenset()
    keep_s: float = 3600.0
    held: dict[tuple[str, int], tuple[str, float, float]] = field(default_factory=dict)  # (camera, track) → match
    closed: list[tuple[str, str, float, float]] = field(default_factory=list)  # (camera, identity, first, last)

    def __post_init__(self) -> None:
        self.overlaps = frozenset(frozenset(p) for p in self.overlaps)

    def _apart(self, a: str, b: str) -> bool:
        return a != b and frozenset((a, b)) not in self.overlaps

    def blocked(self, camera: str, first: float, last: float) -> set[str]:
        """Identities held on another camera (that cannot see this one's people at once) during [first, last]."""
        out = {ident for (cam, _), (ident, s, e) in self.held.items()
               if self._apart(cam, camera) and s <= last and first <= e}
        return out | {ident for cam, ident, s, e in self.closed
                      if self._apart(cam, camera) and s <= last and first <= e}

    def update(self, camera: str, current: dict[int, tuple[str | None, float]]) -> None:
        """A camera's open tracks now: track → (its current match or None, its first wall time). An open track's
        match holds from its first wall time on, with no end: it is still in view, and a span cut at the moment it
        was shared would let another camera take its identity a moment later."""
        for key in [k for k in self.held if k[0] == camera and k[1] not in current]:
            del self.held[key]
        for tid, (ident, s) in current.items():
            if ident is None:
                self.held.pop((camera, tid), None)
            else:
                self.held[(camera, tid)] = (ident, s, math.inf)

    def close(self, camera: str, track: int, identity: str | None, first: float, last: float) -> None:
        """A track's final decision: a match stays blocking for its wall span."""
        self.held.pop((camera, track), None)
        if identity is not None:
            self.closed.append((camera, identity, first, last))
        self.closed = [c for c in self.closed if c[3] >= last - self.keep_s]


@dataclass
class CameraHooks:
    """What a caller adds to a run's cameras: ``cross``, the matches they share (None: each camera on its own);
    ``on_final(camera, TrackResult, Decision, DecisionEvent | None, (first_wall, last_wall))`` for each track that
    ends, with its final decision (the event is None for a track too short to announce); ``on_threshold(Threshold, metric)``
    once the run's threshold is fixed, before the first frame; ``on_frame(camera, index, frame)`` with each frame as
    drawn for the result video (the frame is reused afterwards: copy what is kept); ``gallery()`` → (version,
    identities), asked at each frame: a new version replaces the identities the cameras decide with (a gallery
    changed while the service runs). ``cameras``: every LiveCamera made, as it is made (for a status page).
    ``prepare(camera, source)``: before a camera is built on its opened source (the watch service turns its frames
    there). ``ignore``: camera → ``f(xyxy) → bool mask`` of detections to leave out before tracking."""

    cross: CrossCameras | None = None
    on_final: Callable | None = None
    on_threshold: Callable | None = None
    on_frame: Callable | None = None
    gallery: Callable | None = None
    cameras: list = field(default_factory=list)
    prepare: Callable | None = None
    ignore: dict = field(default_factory=dict)


__all__ = ["CameraHooks", "CrossCameras"]
