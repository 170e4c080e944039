"""Fonts for the pictures matplotlib draws: names in any script, where the system has a font with their glyphs.

matplotlib's default font (DejaVu Sans, which it ships) has Latin, Greek and Cyrillic but no CJK, Arabic or Indic
glyphs, which it draws as empty boxes. ``families_for`` keeps DejaVu Sans first and adds, for each character it
lacks, the first installed font that has it (known good ones first: Noto Sans CJK, Noto Sans, WenQuanYi, Droid Sans
Fallback; then any), as a fallback list matplotlib (3.6 and later) uses glyph by glyph. Characters no installed font
has are returned, for a warning: Debian's fonts-noto-cjk brings Chinese, Japanese and Korean.
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

BASE = "DejaVu Sans"
PREFERRED = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Noto Sans",
             "Noto Sans Arabic", "Noto Sans Devanagari", "Noto Sans Thai", "Noto Sans Hebrew", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "Droid Sans Fallback", "Unifont")


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font
    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # an unreadable font file: no glyphs from it
        return frozenset()


def _installed() -> list[tuple[str, str]]:
    """(family, file) of every font matplotlib knows, preferred families first, then by name."""
    from matplotlib import font_manager
    # matplotlib's Last Resort font has a placeholder for every code point: a box by another name
    fonts = {(f.name, f.fname) for f in font_manager.fontManager.ttflist if "last resort" not in f.name.lower()}
    rank = {name: k for k, name in enumerate(PREFERRED)}
    return sorted(fonts, key=lambda nf: (rank.get(nf[0], len(rank)), nf[0], nf[1]))


def families_for(texts: list[str]) -> tuple[list[str], str]:
    """The font families to draw ``texts`` with (``BASE`` first) and the characters that no installed font has."""
    from matplotlib import font_manager
    base = _charmap(font_manager.findfont(BASE))
    need = sorted({c for t in texts for c in t if not c.isspace() and ord(c) not in base})
    if not need:
        return [BASE], ""
    families, missing = [BASE], []
    fonts = _installed()
    if any(not any(ord(c) in _charmap(f) for _, f in fonts) for c in need):
        # matplotlib's font list is a cache from its first run: fonts installed since are not in it yet
        known = {f for _, f in fonts}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    pass
        fonts = _installed()
    for c in need:
        if any(ord(c) in _charmap(f) for n, f in fonts if n in families):
            continue
        found = next((n for n, f in fonts if ord(c) in _charmap(f)), None)
        if found is None:
            missing.append(c)
        else:
            families.append(found)
    return families, "".join(missing)


def font_rc(texts: list[str], what: str) -> dict:
    """matplotlib rc settings that draw ``texts``; logs a warning naming the characters no font here has."""
    families, missing = families_for(texts)
    if missing:
        log.warning("%s: no installed font has the characters %r (they show as boxes); install a font with them, "
                    "e.g. Debian's fonts-noto-cjk for Chinese, Japanese and Korean", what, missing[:20])
    elif len(families) > 1:
        log.debug("%s: fonts %s", what, ", ".join(families))
    return {"font.family": families}


__all__ = ["BASE", "families_for", "font_rc"]
