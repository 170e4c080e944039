"""The words people read: what each decision reason means, and counts with their noun in the right number. The
console table, the result video's labels and the report use these, so they say one thing."""
from __future__ import annotations

# a decision's reason code (run.json "reason") → what it means
WHY = {
    "no_candidate": "no identity within the threshold",
    "taken": "its candidates went to people seen at the same time, which gave the larger total margin",
    "no_gallery": "the gallery has no usable identity",
    "too_few_silhouettes": "too few usable silhouettes to compare",
}

def why(reason: str | None, short: bool = False) -> str:
    """The words for a reason code (an unknown code with its underscores turned to spaces); ``short``: only their
    first clause, for a label drawn on a person (the same words the console begins with)."""
    words = WHY.get(reason or "", str(reason or "").replace("_", " "))
    return words.split(", ")[0] if short else words


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun: '1 track', '3 tracks', '0 identities' (``plural`` where adding an s is wrong)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


__all__ = ["WHY", "count", "why"]
