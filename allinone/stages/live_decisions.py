"""The decision bookkeeping of a live stream, apart from frames and models so it can be tested by hand.

State: each open track's latest embedding; each open track's current span (from the tracker, passed in at every
call, never the span it had when it was last embedded); the final decisions of closed tracks that may still overlap
an open one. Guarantees (README, "Live cameras"):
  - at every decision the rule (decide/match.py) runs over the open embedded tracks with their current spans, and
    a closed track's final identity is blocked for every open track it overlaps, so two tracks seen in one frame
    never hold one identity, whether both are open or one has closed;
  - spans only grow, so a new overlap can make the current decisions infeasible without any new embedding (a track
    at the frame edge, not re-embedded, reappears beside another holding the same identity): ``conflict`` finds
    that and the caller decides again;
  - a track the tracker lets go is closed with a final decision (the rule with it included, at its full span),
    which is the run's decision for it (matches.csv, run.json);
  - closed tracks are forgotten once no open track can overlap them, so memory does not grow with the stream.
"""
from __future__ import annotations

from allinone.records import Decision, Embedding, Identity


class LiveDecisions:
    def __init__(self, matcher, identities: list[Identity], threshold: float, video: str, lookup=None,
                 blocked=None) -> None:
        """``lookup``: for a large gallery file, embeddings → the identities to compare them with (its index),
        asked at each decision in place of ``identities``. ``blocked``: track id → identities it cannot be for
        reasons beyond this stream (held on another camera at the same moment), asked at each decision."""
        self.matcher, self.identities, self.threshold, self.video = matcher, identities, threshold, video
        self.lookup, self.elsewhere = lookup, blocked
        self.colors = {i.name: i.key for i in identities}  # every identity a decision has been compared with
        self.latest: dict[int, Embedding] = {}  # open tracks with an embedding
        self.current: dict[int, Decision] = {}  # their current decisions
        self.closed: list[tuple[int, int, str]] = []  # (first, last, identity) of closed matches still relevant

    def embedded(self, emb: Embedding) -> None:
        self.latest[emb.track_id] = emb

    def conflict(self, spans: dict[int, tuple[int, int]]) -> bool:
        """Do two open tracks that overlap (current spans) hold the same identity now?"""
        held: dict[str, list[tuple[int, int]]] = {}
        for tid, d in self.current.items():
            if d.status == "match" and tid in spans:
                held.setdefault(d.identity, []).append(tuple(spans[tid][:2]))
        for ranges in held.values():
            if len(ranges) > 1:
                ranges.sort()
                end = ranges[0][1]
                for s, e in ranges[1:]:
                    if s <= end:
                        return True
                    end = max(end, e)
        return False

    def _blocked(self, first: int, last: int) -> set[str]:
        return {name for s, e, name in self.closed if s <= last and first <= e}

    def decide(self, spans: dict[int, tuple[int, int]], redone: set[int] = frozenset(),
               closing: dict[int, Embedding | None] | None = None) -> tuple[list[Decision], dict[int, Decision]]:
        """The rule over the open embedded tracks (current spans) and the ``closing`` ones (their embedding, or None
        for a track never embedded, at their full span). Returns (decisions to emit: those in ``redone``, those that
        changed, and the closing ones; the closing tracks' final decisions by track)."""
        closing = closing or {}
        probes = []
        for tid, e in self.latest.items():
            if tid in closing:
                continue
            first, last = spans[tid][0], spans[tid][1]
            probes.append(Embedding(e.video, tid, e.feature, e.n_frames, first, last))
        for tid, e in closing.items():
            if e is not None:
                probes.append(e)
        blocked = [self._blocked(p.first_frame, p.last_frame) for p in probes]
        if self.elsewhere is not None:
            blocked = [b | self.elsewhere(p.track_id) for b, p in zip(blocked, probes)]
        out, finals = [], {}
        found = self.identities if self.lookup is None or not probes else self.lookup(probes)
        self.colors.update({i.name: i.key for i in found})
        for d in self.matcher(probes, found, self.threshold, blocked) if probes else []:
            tid = d.probe_track
            if tid in closing:
                finals[tid] = d
                if d.status != "too_short":  # a track too short to compare was never announced: nothing to close
                    out.append(d)
                continue
            old = self.current.get(tid)
            if tid in redone or old is None or (old.status, old.identity, old.reason) != (d.status, d.identity,
                                                                                         d.reason):
                out.append(d)
            self.current[tid] = d
        for tid, e in closing.items():
            d = finals.get(tid) or Decision.too_short(self.video, tid)
            finals[tid] = d
            if d.status == "match":
                p = next(p for p in probes if p.track_id == tid)
                self.closed.append((p.first_frame, p.last_frame, d.identity))
            self.latest.pop(tid, None)
            self.current.pop(tid, None)
        return out, finals

    def update(self, spans: dict[int, tuple[int, int]], new: list[Embedding]) -> list[Decision]:
        """One frame: the new embeddings (tracks re-embedded at this frame), then the rule again if there are any
        or if grown spans made the current decisions conflict. Returns the decisions to announce."""
        for e in new:
            self.embedded(e)
        if new or self.conflict(spans):
            return self.decide(spans, {e.track_id for e in new})[0]
        return []

    def close(self, closing: dict[int, Embedding | None],
              spans: dict[int, tuple[int, int]]) -> tuple[list[Decision], dict[int, Decision]]:
        """Tracks the tracker let go (``spans``: the tracks still open): their final decisions, and whatever that
        changes for the open ones; closed matches no open track can overlap are then forgotten."""
        out, finals = self.decide(spans, closing=closing)
        self.forget_before(min((s[0] for s in spans.values()), default=None))
        return out, finals

    def forget_before(self, first_open: int | None) -> None:
        """Drop closed matches that end before every open track began (None: no track is open)."""
        self.closed = [c for c in self.closed if first_open is not None and c[1] >= first_open]


__all__ = ["LiveDecisions"]
