"""Gallery identities: who the known people are, built from gallery tracks.

By default each gallery track is an identity of its own, named ``G<track id>`` (as it is labelled in the
gallery's tracked video). ``--identity NAME=ID[,ID...]`` names a person and gives them one or more gallery tracks
(a person whose track was split by an occlusion, or who walked by twice); the distance to an identity is the
smallest distance to any of its tracks (OpenGait's multi-shot convention).
"""
from __future__ import annotations

import argparse
import logging
import re

from allinone.errors import UserError
from allinone.records import Embedding, Identity

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[^\s,=;:][^,=;:]*$")


def default_name(track_id: int) -> str:
    return f"G{track_id}"


def parse_identity(text: str) -> tuple[str, tuple[int, ...]]:
    """argparse type for ``NAME=ID[,ID...]``."""
    name, sep, ids = text.partition("=")
    name = name.strip()
    if not sep or not name or not ids.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=TRACK[,TRACK...], got {text!r}")
    if not _NAME.match(name):
        raise argparse.ArgumentTypeError(f"identity name {name!r} may not contain , = ; : or start with a space")
    try:
        tracks = tuple(int(x) for x in ids.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"track ids must be whole numbers, got {ids!r}") from None
    if any(t < 1 for t in tracks):
        raise argparse.ArgumentTypeError(f"track ids start at 1, got {ids!r}")
    return name, tracks


def check_named(named: tuple[tuple[str, tuple[int, ...]], ...]) -> None:
    """Names unique, each track named once (UserError otherwise); cheap, before any model runs."""
    names = [n for n, _ in named]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"--identity names must be unique: {', '.join(sorted(dup))} given twice")
    seen: dict[int, str] = {}
    for name, tracks in named:
        for t in tracks:
            if t in seen:
                raise UserError(f"gallery track {t} is given to two identities ({seen[t]} and {name})")
            seen[t] = name


def gallery_identities(gallery: list[Embedding], named: tuple[tuple[str, tuple[int, ...]], ...] = (),
                       *, strict: bool = False) -> list[Identity]:
    """Identities from the gallery tracks that have an embedding: the named ones first (in the order given), then
    one per remaining track, ``G<id>``. Named track ids the gallery lacks are a warning (a UserError when
    ``strict``); a default name that a user's name already took is a UserError."""
    check_named(named)
    by_id = {e.track_id: e for e in gallery}
    out: list[Identity] = []
    used: set[int] = set()
    for name, tracks in named:
        missing = [t for t in tracks if t not in by_id]
        if missing:
            msg = (f"--identity {name}: gallery track(s) {', '.join(map(str, missing))} have no embedding "
                   f"(known tracks: {', '.join(map(str, sorted(by_id))) or 'none'})")
            if strict:
                raise UserError(msg)
            log.warning(msg)
        members = tuple(by_id[t] for t in tracks if t in by_id)
        used.update(tracks)
        if members:
            out.append(Identity(name, members, key=min(m.track_id for m in members)))
    taken = {i.name for i in out}
    for tid in sorted(by_id):
        if tid in used:
            continue
        name = default_name(tid)
        if name in taken:
            raise UserError(f"identity name {name} is also the default name of gallery track {tid}; choose another")
        out.append(Identity(name, (by_id[tid],), key=tid))
    return out
