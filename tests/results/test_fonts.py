"""Names in non-Latin scripts are drawn with their glyphs (not as boxes) where the system has a font for them."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from allinone.results.fonts import BASE, families_for


def _has_cjk_font() -> bool:
    fc = shutil.which("fc-list")
    return bool(fc) and "CJK" in subprocess.run([fc], capture_output=True, text=True).stdout


def _render(text: str, families: list[str]) -> np.ndarray:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with plt.rc_context({"font.family": families}):
        fig = plt.figure(figsize=(1, 1), dpi=60)
        fig.text(0.1, 0.3, text, fontsize=30)
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., 0].copy()
        plt.close(fig)
    return img


def test_latin_names_need_only_the_default_font():
    assert families_for(["Ann", "Müller", "Ærøskøbing"]) == ([BASE], "")


@pytest.mark.filterwarnings("ignore:Glyph")  # the boxes drawn with the default font on purpose
def test_cjk_names_get_a_font_with_their_glyphs():
    if not _has_cjk_font():
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-noto-cjk)")
    families, missing = families_for(["Ann", "张伟", "李娜"])
    assert missing == "" and families[0] == BASE and len(families) == 2
    # drawn with the default font alone, two different characters are the same empty box; with the chosen
    # fallback they are two different glyphs
    assert np.array_equal(_render("张", [BASE]), _render("伟", [BASE]))
    assert not np.array_equal(_render("张", families), _render("伟", families))


def test_characters_no_font_has_are_named():
    families, missing = families_for(["\U000f0001"])  # a private-use code point: no font has a glyph for it
    assert missing == "\U000f0001" and families == [BASE]


def test_heatmap_of_cjk_identities_shows_glyphs(tmp_path):
    if not _has_cjk_font():
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-noto-cjk)")
    import cv2

    from allinone.results.report import heatmap

    def manifest(names):
        return {"identities": [{"name": n} for n in names], "threshold": {"value": 0.5},
                "matches": [{"probe_video": "v", "probe_track": 1, "status": "unknown", "identity": None,
                             "ranking": [{"identity": n, "distance": 0.1 * (k + 1)} for k, n in enumerate(names)]}]}
    assert heatmap(manifest(["张伟", "李娜"]), tmp_path / "a.png")
    assert heatmap(manifest(["王芳", "刘洋"]), tmp_path / "b.png")
    a, b = cv2.imread(str(tmp_path / "a.png")), cv2.imread(str(tmp_path / "b.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)  # the names differ in the picture, not just boxes
