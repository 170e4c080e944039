"""The assignment behind a decision: which identity each probe track of one video takes.

Input: sparse candidate pairs (track, identity, weight > 0 or = 0) — only pairs that passed the gate (within the
threshold) exist at all — and each track's (first, last) frame. Output: per track the identity it takes, or None.

Objective: maximise the total weight of the chosen pairs, subject to
  - a track takes at most one identity;
  - two tracks whose frame ranges overlap (seen at the same time) never take the same identity.
With weight = t − d (the margin under the threshold) this is "the total margin Σ(t − d)"; a score model can give
any other non-negative weight per pair (for example a log likelihood ratio where it is positive) and nothing here
changes. Ties are broken towards more matches: the weights are scaled so the largest is at least SCALE, and every
one gets TIE times the largest added, so of two assignments whose totals differ by less than TIE times the largest
weight per extra match, the one with more matches wins (a pair exactly at the threshold, weight 0, still matches
when nothing else wants its identity). The scale keeps that margin (at least 1e-3 absolute) far above HiGHS's
absolute gap (1e-6) and its optimality tolerances (1e-7), which a tie-break relative to weights of about 1 would
fall under.

Time limit: the integer program stops after 3/4 of ``seconds`` (MatchConfig.solve_seconds); then its best assignment
and the linear relaxation rounded (pairs in order of their LP value, while they fit) are compared and the better is
taken, with its gap to the best bound on the optimum (the LP's value, or HiGHS's bound) reported.

How it scales (README, "How a probe person is decided"):
  - components: two tracks interact only when they overlap AND share a candidate identity. Per identity, its
    tracks sorted by first frame are swept once (a running last frame), union-find joins the overlapping runs:
    O(P log P) for P candidate pairs, never a loop over pairs of tracks;
  - a component of one track takes its heaviest pair;
  - a component whose tracks all overlap pairwise (one moment) is a rectangular assignment problem: Hungarian
    (scipy's linear_sum_assignment) on the gated weight matrix with one private "unknown" column per track;
  - the other components go to one exact integer program (HiGHS through scipy.optimize.milp; they share no
    variable or row, so solving them together is solving each, without one solver call per component) with sparse
    rows: one per track, and per identity one per maximal clique of its overlapping tracks (in an interval graph
    every overlapping pair lies inside a maximal clique, and the maximal cliques are the sets of tracks in view just
    before one ends).
``exact=True`` skips the decomposition and the fast paths (one integer program over everything): the reference
the benchmark and the tests compare against.
"""
from __future__ import annotations

import time

import numpy as np

SCALE = 1000.0  # the largest weight at least, once scaled (module doc)
TIE = 1e-6  # added to every weight, relative to the largest: ties go to more matches


def _find(parent: np.ndarray, a: int) -> int:
    root = a
    while parent[root] != root:
        root = parent[root]
    while parent[a] != root:
        parent[a], a = root, parent[a]
    return root


def components(rows: np.ndarray, cols: np.ndarray, spans: np.ndarray) -> list[np.ndarray]:
    """Groups of pair indices whose tracks are linked by "overlap and share a candidate identity"."""
    n = len(spans)
    parent = np.arange(n)
    order = np.lexsort((spans[rows, 0], cols))  # by identity, then first frame
    prev_col, end, rep = -1, -1, -1
    for p in order.tolist():
        i, k = int(rows[p]), int(cols[p])
        s, e = int(spans[i, 0]), int(spans[i, 1])
        if k != prev_col or s > end:
            prev_col, end, rep = k, e, i
            continue
        a, b = _find(parent, i), _find(parent, rep)
        if a != b:
            parent[a] = b
        if e > end:
            end, rep = e, i
    roots = np.array([_find(parent, int(i)) for i in rows], dtype=np.int64)
    order = np.argsort(roots, kind="stable")
    cuts = np.flatnonzero(np.diff(roots[order])) + 1
    return np.split(order, cuts)


def _cliques(members: np.ndarray, spans: np.ndarray) -> list[list[int]]:
    """Maximal cliques (size >= 2) of the interval graph of ``members`` (indices into spans; closed ranges)."""
    events = sorted([(int(spans[i, 0]), 0, int(i)) for i in members] + [(int(spans[i, 1]), 1, int(i)) for i in members])
    active: set[int] = set()
    out = []
    for j, (_, kind, i) in enumerate(events):
        if kind == 0:
            active.add(i)
            if len(active) >= 2 and j + 1 < len(events) and events[j + 1][1] == 1:
                out.append(sorted(active))
        else:
            active.discard(i)
    return out


def _hungarian(rows: np.ndarray, cols: np.ndarray, w: np.ndarray) -> np.ndarray:
    """0/1 per pair for tracks that are all in view together: a plain assignment with an 'unknown' per track."""
    from scipy.optimize import linear_sum_assignment

    tracks, r = np.unique(rows, return_inverse=True)
    idents, c = np.unique(cols, return_inverse=True)
    n, k = len(tracks), len(idents)
    big = -1.0 - 2.0 * float(w.sum())  # worse than leaving every track unknown: never chosen
    m = np.full((n, k + n), big)
    m[r, c] = w
    m[np.arange(n), k + np.arange(n)] = 0.0  # each track's own "unknown" column
    ri, ci = linear_sum_assignment(m, maximize=True)
    chosen = {(int(a), int(b)) for a, b in zip(ri, ci) if b < k}
    return np.array([(int(a), int(b)) in chosen for a, b in zip(r, c)])


def _constraints(rows: np.ndarray, cols: np.ndarray, spans: np.ndarray):
    """The program's rows as a sparse [rows, pairs] 0/1 matrix (each row: at most one of its pairs)."""
    from scipy.sparse import coo_array

    m = len(rows)
    r_idx: list[int] = []
    c_idx: list[int] = []
    n_rows = 0
    order = np.argsort(rows, kind="stable")
    for grp in np.split(order, np.flatnonzero(np.diff(rows[order])) + 1):  # one identity per track
        if len(grp) > 1:
            r_idx.extend([n_rows] * len(grp))
            c_idx.extend(grp.tolist())
            n_rows += 1
    order = np.argsort(cols, kind="stable")
    for grp in np.split(order, np.flatnonzero(np.diff(cols[order])) + 1):  # one track per identity and moment
        if len(grp) < 2:
            continue
        pair_of = {int(rows[p]): int(p) for p in grp}
        for clique in _cliques(rows[grp], spans):
            r_idx.extend([n_rows] * len(clique))
            c_idx.extend(pair_of[i] for i in clique)
            n_rows += 1
    return coo_array((np.ones(len(r_idx)), (np.array(r_idx, np.int64), np.array(c_idx, np.int64))),
                     shape=(n_rows, m)).tocsr()


def _program(w: np.ndarray, a, integral: bool, seconds: float | None):
    from scipy.optimize import Bounds, LinearConstraint, milp

    options: dict = {"mip_rel_gap": 0.0}
    if seconds is not None:
        options["time_limit"] = max(0.01, float(seconds))
    constraints = [LinearConstraint(a, -np.inf, 1.0)] if a.shape[0] else []
    return milp(-w, constraints=constraints, integrality=np.full(len(w), 1 if integral else 0),
                bounds=Bounds(0, 1), options=options)


def _fill(chosen: np.ndarray, order: np.ndarray, a) -> np.ndarray:
    """``chosen`` with every other pair added that still fits, in ``order``."""
    chosen = chosen.copy()
    load = a @ chosen.astype(np.float64)
    at = a.T.tocsr()
    for p in order:
        rows_p = at.indices[at.indptr[p]:at.indptr[p + 1]]
        if not chosen[p] and not (load[rows_p] > 0.5).any():
            chosen[p] = True
            load[rows_p] += 1
    return chosen


def _rounded_relaxation(w: np.ndarray, a, seconds: float) -> tuple[np.ndarray, float]:
    """(an assignment, the bound on the optimum): the linear relaxation solved, then its pairs taken greedily in
    order of their LP value (heavier first among equal values) while they fit; the LP's value bounds the optimum."""
    lp = _program(w, a, False, seconds)
    if lp.x is None or lp.status != 0:
        return np.zeros(len(w), bool), np.inf
    order = np.lexsort((-w, -np.round(lp.x, 9)))
    return _fill(np.zeros(len(w), bool), order, a), float(-lp.fun)


def _milp(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, spans: np.ndarray,
          seconds: float | None = None) -> tuple[np.ndarray, dict]:
    """(0/1 per pair, how it was solved): the integer program with sparse constraints; exact, unless it runs past
    3/4 of ``seconds``: then the better of its best assignment and the rounded relaxation (the rest of the time),
    with the gap to the best bound on the optimum (module doc)."""
    a = _constraints(rows, cols, spans)
    res = _program(w, a, True, None if seconds is None else 0.75 * seconds)
    if res.status == 0:
        return np.round(res.x) > 0.5, {"status": "optimal", "gap": 0.0}
    heavy = np.argsort(-w, kind="stable")
    found = _fill(np.round(res.x) > 0.5 if res.x is not None else np.zeros(len(w), bool), heavy, a)
    bound = getattr(res, "mip_dual_bound", None)
    bound = np.inf if bound is None or not np.isfinite(bound) else -float(bound)
    fixed, lp_bound = _rounded_relaxation(w, a, max(1.0, 0.25 * seconds))
    method = "integer program (time limit)"
    if w[fixed].sum() > w[found].sum():
        found, method = fixed, "relaxation rounded"
    value, bound = float(w[found].sum()), min(bound, lp_bound)
    gap = (bound - value) / bound if np.isfinite(bound) and bound > 0 else None
    return found, {"status": "time_limit", "method": method, "gap": gap}


def assign_identities(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray, spans, n_tracks: int | None = None,
                      exact: bool = False, seconds: float | None = None,
                      solve: dict | None = None) -> list[int | None]:
    """Per track (0 … n_tracks-1) the identity column it takes, or None (the module's objective).

    rows, cols, weight: the candidate pairs (track index, identity column, weight >= 0); spans: [n_tracks, 2]
    (first, last) frames, closed. seconds: the integer program's time limit (None: none; exact=True never has
    one). solve: a dict that receives how the integer program went, when one ran: pairs, seconds, status
    (optimal | time_limit), gap (relative, to the best bound on the optimum) and, past the limit, the method."""
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    n = len(spans) if n_tracks is None else n_tracks
    out: list[int | None] = [None] * n
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    w = np.asarray(weight, dtype=np.float64)
    if not len(rows):
        return out
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("candidate weights must be finite and >= 0")
    top = float(w.max())
    if 0 < top < SCALE:  # scaled up only: a scale-down would shrink the differences of huge weights below tolerance
        w, top = w * (SCALE / top), SCALE
    w = w + TIE * max(top, SCALE)
    if exact:
        chosen, _ = _milp(rows, cols, w, spans)
        for p in np.flatnonzero(chosen):
            out[int(rows[p])] = int(cols[p])
        return out
    general = []  # components that need the integer program: solved together, one HiGHS call (they separate)
    for grp in components(rows, cols, spans):
        r, c, g = rows[grp], cols[grp], w[grp]
        tracks = np.unique(r)
        if len(tracks) == 1:
            best = int(np.argmax(g))  # first of equal weights: the lowest column
            out[int(r[best])] = int(c[best])
            continue
        s = spans[tracks]
        if s[:, 0].max() <= s[:, 1].min():  # one moment: everyone in view together
            for p in np.flatnonzero(_hungarian(r, c, g)):
                out[int(r[p])] = int(c[p])
        else:
            general.append(grp)
    if general:
        grp = np.concatenate(general)
        t0 = time.perf_counter()
        chosen, how = _milp(rows[grp], cols[grp], w[grp], spans, seconds)
        for p in np.flatnonzero(chosen):
            out[int(rows[grp][p])] = int(cols[grp][p])
        if solve is not None:
            solve.update(pairs=int(len(grp)), seconds=round(time.perf_counter() - t0, 3), **how)
    return out


__all__ = ["SCALE", "TIE", "assign_identities", "components"]
