"""The console summary after a run: one row per probe person (identity, or unknown and why; distance; threshold and
its basis) and where the report is. Read from run.json's entries, defensively (fields may be added)."""
from __future__ import annotations

from pathlib import Path

WHY = {
    "no_candidate": "no identity within the threshold",
    "taken": "its candidates went to people seen at the same time, which gave the larger total margin",
    "no_gallery": "the gallery has no usable identity",
    "too_few_silhouettes": "too few usable silhouettes to compare",
}


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
        for m in matches:
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
        counts = {s: sum(m.get("status") == s for m in matches) for s in ("match", "unknown", "too_short")}
        lines.append(f"{counts['match']} matched, {counts['unknown']} unknown, {counts['too_short']} too short")
    if manifest.get("report"):
        lines.append(f"report: {run_dir / manifest['report']}")
    return "\n".join(lines)


__all__ = ["WHY", "console_summary", "threshold_basis"]
