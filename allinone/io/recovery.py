"""A killed live run's folder, found by a later run: kept and made readable, never deleted.

A live run writes what cannot be made again (the events, MOT rows and result video of a stream that has played), so
its partial folder ``.<name>.partial-<pid>`` holds a journal, ``.live.json``: the run.json it would end with if it
failed, rewritten whenever a segment opens (RunWriter.journal). When the sweep of a later run finds such a folder of
a process that is gone (or one with events files and no journal), ``recover`` finalizes it in place of deleting it:

- the open segment's result video gets its own name (its fragments play up to the last keyframe; io/segments.py),
- every segment is listed (the journal's, plus any whose files are on disk but not yet in it), the open one with
  ``complete: false`` and its last frame read from its MOT rows,
- run.json is written with ``status: "incomplete"`` and why, and the folder renamed to ``<name>`` (or
  ``<name>-recovered``, ``-recovered-2`` … where that exists).
"""
from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

JOURNAL = ".live.json"
_EVENTS = re.compile(r"^(?P<stem>events(?:-.+)?)-(?P<i>\d{3,})\.jsonl$")


def recoverable(folder: Path) -> bool:
    """Whether a partial run folder holds a live run's work (its journal, or events files)."""
    try:
        return (folder / JOURNAL).is_file() or any(_EVENTS.match(p.name) for p in folder.iterdir())
    except OSError:
        return False


def _read_journal(folder: Path) -> dict:
    try:
        doc = json.loads((folder / JOURNAL).read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}  # no journal, or torn by the kill: the segments are found from the files


def _last_mot_frame(path: Path) -> int | None:
    try:
        with open(path, encoding="utf-8") as fh:
            frames = [int(line.split(",", 1)[0]) for line in fh if line.count(",") >= 6]
    except (OSError, ValueError):
        return None
    return max(frames) if frames else None


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.endswith(b"\n"))
    except OSError:
        return 0


def _segments(folder: Path, live: dict, stem: str = "events") -> list[dict]:
    """Every segment of one stream: the journal's, completed by what is on disk (its events files are
    ``<stem>-NNN.jsonl``); the open one mended."""
    entries = [dict(e) for e in live.get("segments") or [] if isinstance(e, dict)]
    listed = {e.get("index") for e in entries}
    for p in sorted(folder.iterdir()):
        m = _EVENTS.match(p.name)
        if m and m.group("stem") == stem and int(m.group("i")) not in listed:  # opened after the journal's last write
            entries.append({"index": int(m.group("i")), "events": p.name, "complete": False})
    entries.sort(key=lambda e: e.get("index", 0))
    for e in entries:
        if e.get("complete"):
            continue
        video, partial = e.pop("result_video", None), e.pop("partial_video", None)
        if video and partial and Path(partial).name == partial and not (folder / video).exists():
            try:
                os.replace(folder / partial, folder / video)
            except FileNotFoundError:  # killed before the sink made its file: the segment has no video
                pass
        if video and (folder / video).exists():
            e["result_video"] = video
        if e.get("tracks_file"):
            last = _last_mot_frame(folder / e["tracks_file"])
            if last is not None:
                e["last_frame"] = last
        e["recovered"] = True
    for e in entries:
        if e.get("events"):
            e["events_written"] = _lines(folder / e["events"])
    return entries


def recover(folder: Path, name: str, pid: int) -> Path:
    """Finalize a killed live run's partial folder as incomplete (see the module's docstring); its new path."""
    doc = _read_journal(folder)
    live = doc.get("live") if isinstance(doc.get("live"), dict) else {}
    if not live:
        live = {"stream": {}}
    for stream, entry in list(live.items()):
        entry = entry if isinstance(entry, dict) else {}
        # one stream's events files are events-NNN.jsonl; several streams' carry their names (runner/runner.py)
        stem = "events" if len(live) == 1 else f"events-{stream}"
        live[stream] = {**entry, "segments": _segments(folder, entry, stem)}
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = {**doc, "live": live, "status": "incomplete",
                "error": f"the live run's process (PID {pid}) was killed or its machine went down; its folder was "
                         f"recovered by a later run at {when}: the segments and events written until then are kept, "
                         "the open segment's video plays up to its last keyframe"}
    tmp = folder / ".run.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "run.json")
    (folder / JOURNAL).unlink(missing_ok=True)
    root = folder.parent
    target, n = root / name, 1
    while True:
        try:
            os.rename(folder, target)  # never over an existing folder (a non-empty one refuses)
            return target
        except OSError:
            if not target.exists():
                raise
        target = root / (f"{name}-recovered" if n == 1 else f"{name}-recovered-{n}")
        n += 1


__all__ = ["JOURNAL", "recover", "recoverable"]
