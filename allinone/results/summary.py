"""The console summary after a run: one row per probe person (identity, or unknown and why; distance; threshold and
its basis) and where the report is. Read from run.json's entries, defensively (fields may be added)."""
from __future__ import annotations

from pathlib import Path

from allinone.results.words import WHY


# The console shows the decisions of the first this many probe people; the rest are in the run's files.
CONSOLE_ROWS = 100


def _num(x) -> str:
    return "—" if x is None else f"{float(x):.4g}"


def threshold_basis(thr: dict) -> str:
    """A few words on where the threshold came from: its basis and the figures behind it."""
    basis = str(thr.get("basis", "?"))
    extra = []
    if thr.get("impostor_pairs") is not None:
        extra.append(f"{thr['impostor_pairs']} impostor pairs")
    for key in ("far", "fpir", "target_fpir"):
        if isinstance(thr.get(key), (int, float)):
            extra.append(f"{key.upper().replace('TARGET_', 'target ')} {thr[key]:g}")
    if thr.get("file"):
        extra.append(Path(str(thr["file"])).name)
    return basis + (f" ({', '.join(extra)})" if extra else "")


def evidence_line(thr: dict) -> str:
    """One line on the evidence the threshold rests on: the pairs, how many independent (in people), and each source,
    a calibration file by its path and how it was found."""
    ev = thr.get("evidence") or {}
    src = ev.get("sources") or {}
    value = "none" if thr.get("value") is None else f"{float(thr['value']):.4g}"
    head = f"threshold {value} ({thr.get('basis', '?')}"
    head += f", target FPIR {thr['target_fpir']:g})" if isinstance(thr.get("target_fpir"), (int, float)) else ")"
    if not ev.get("pairs"):
        return head + ": no impostor evidence" + (f"; old calibration file {thr['file']}" if thr.get("file") else "")
    parts = []
    run_pairs = int(src.get("seen_together") or 0) + int(src.get("gallery_identities") or 0)
    if run_pairs:
        parts.append(f"{run_pairs} from this run ({src.get('seen_together', 0)} seen together, "
                     f"{src.get('gallery_identities', 0)} of gallery identities)")
    cal = src.get("calibration")
    if isinstance(cal, dict):
        parts.append(f"{cal.get('pairs')} from calibration file {cal.get('file')}"
                     + (f" ({cal['found']})" if cal.get("found") else ""))
    fp = thr.get("fpir") or {}
    est = (f"; estimated FPIR {fp['estimate']:.3g} (95% CI {fp['ci95'][0]:.3g}-{fp['ci95'][1]:.3g})"
           if isinstance(fp.get("estimate"), (int, float)) and isinstance(fp.get("ci95"), list) else "")
    return (f"{head}: rests on {ev['pairs']} impostor pairs, {ev.get('independent_pairs')} independent (disjoint "
            f"pairs of people): " + "; ".join(parts) + est)


def console_summary(manifest: dict, run_dir: Path | str) -> str:
    """The table (plain text, fixed-width columns) and the report's path; only the run folder's path when the run
    made no decisions (--track-only)."""
    run_dir = Path(run_dir)
    matches = manifest.get("matches")
    lines = []
    if matches is not None:
        thr = manifest.get("threshold") or {}
        t = _num(thr.get("value"))
        basis = threshold_basis(thr)
        rows = [("probe", "person", "decision", "distance", "threshold", "basis")]
        for m in matches[:CONSOLE_ROWS]:
            status = m.get("status")
            if status == "match":
                decision = f"→ {m.get('identity')}"
            else:
                reason = m.get("reason")
                decision = f"{str(status).replace('_', ' ')}: {WHY.get(reason, reason)}"
            rows.append((str(m.get("probe_video", "")), f"P{m.get('probe_track')}", decision, _num(m.get("distance")),
                         t, basis))
        if len(rows) == 1:
            rows.append(("—", "", "nobody was found in the probe videos", "", t, basis))
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if len(matches) > CONSOLE_ROWS:  # a long run's thousands of people belong in its files, not the terminal
            lines.append(f"… and {len(matches) - CONSOLE_ROWS:,} more people: every decision is in matches.csv "
                         "and the report")
        counts = {s: sum(m.get("status") == s for m in matches) for s in ("match", "unknown", "too_short")}
        lines.append(f"{counts['match']} matched, {counts['unknown']} unknown, {counts['too_short']} too short")
        if thr:
            lines.append(evidence_line(thr))
    if manifest.get("report"):
        lines.append(f"report: {run_dir / manifest['report']}")
    return "\n".join(lines)


__all__ = ["WHY", "console_summary", "evidence_line", "threshold_basis"]
