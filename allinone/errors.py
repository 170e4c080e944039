"""The one exception type for a user's mistake: the CLI prints its message as one line and exits non-zero."""
from __future__ import annotations

import json
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (a file, a flag, a model). The message names the file and what is wrong."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries often add pages of detail), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters at a word boundary, with "…" where something was cut."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def read_json(path: str | Path, what: str):
    """A JSON file the user gave, parsed; a UserError naming the file when it is missing, unreadable or not JSON."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found", p)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"not a readable {what} ({exc})", p) from None
