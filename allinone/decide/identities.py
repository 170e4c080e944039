"""Gallery identities: who the known people are, built from gallery tracks.

By default each gallery track is an identity of its own, named ``G<track id>`` (as it is labelled in the
gallery's tracked video). ``--identity NAME=ID[,ID...]`` names a person and gives them one or more gallery tracks
(a person whose track was split by an occlusion, or who walked by twice); the distance to an identity is the
smallest distance to any of its tracks (OpenGait's multi-shot convention).
"""
from __future__ import annotations

import argparse
import logging
import unicodedata

from allinone.errors import UserError
from allinone.records import Embedding, Identity

log = logging.getLogger(__name__)

_SEPARATORS = ",=;:"  # they separate --identity's parts
# control and format characters and line or paragraph separators: a listed name must print as one plain line
_UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
NAME_RULE = "not empty, without , = ; : or control characters (a newline, a tab)"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an identity, or None: the one rule for --identity, enroll --name, gallery rename
    and the names an enrol makes from file names. Callers strip the spaces around a name first."""
    if not name or name != name.strip():
        return "is empty" if not name.strip() else "starts or ends with a space"
    bad = sorted({c for c in name if c in _SEPARATORS or unicodedata.category(c) in _UNPRINTABLE})
    if bad:
        return "may not contain " + " ".join(repr(c)[1:-1] if c not in _SEPARATORS else c for c in bad)
    return None


def check_name(name: str, what: str = "identity name") -> str:
    """``name`` stripped, when the name rule admits it; a UserError quoting it otherwise."""
    name = name.strip()
    why = name_problem(name)
    if why:
        raise UserError(f"{what} {name!r} {why} (a name is {NAME_RULE})")
    return name


def clean_name(text: str) -> str:
    """``text`` (a file's stem) made a valid name: what the rule refuses becomes "_"."""
    out = "".join("_" if c in _SEPARATORS or unicodedata.category(c) in _UNPRINTABLE else c for c in text)
    return out.strip() or "_"


def default_name(track_id: int) -> str:
    return f"G{track_id}"


def parse_identity(text: str) -> tuple[str, tuple[int, ...]]:
    """argparse type for ``NAME=ID[,ID...]``."""
    name, sep, ids = text.partition("=")
    name = name.strip()
    if not sep or not name or not ids.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=TRACK[,TRACK...], got {text!r}")
    why = name_problem(name)
    if why:
        raise argparse.ArgumentTypeError(f"identity name {name!r} {why} (a name is {NAME_RULE})")
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
