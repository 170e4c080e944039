"""The bench module run as ``python -m allinone.commands.bench``: its entry block must come after every function
it reaches, or a path such as --crowd dies with a NameError."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from allinone.commands.bench_pipeline import tile_video

REPO = Path(__file__).resolve().parents[2]


def _is_main_block(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)


def test_every_module_entry_block_is_the_last_statement():
    late = []
    for path in sorted((REPO / "allinone").rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        if any(_is_main_block(n) for n in body[:-1]):
            late.append(str(path.relative_to(REPO)))
    assert late == []


def test_crowd_without_the_plaza_video_is_one_line_from_the_module_entry(tmp_path):
    (tmp_path / "fixtures/videos").mkdir(parents=True)
    res = subprocess.run([sys.executable, "-m", "allinone.commands.bench", "--crowd", "2", "--shared",
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "plaza_gallery_boxed.mp4" in lines[0] and "Traceback" not in res.stderr


def test_tile_video_puts_k_copies_side_by_side(tmp_path):
    src = tmp_path / "src.mp4"
    vw = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 24))
    for i in range(3):
        vw.write(np.full((24, 32, 3), 40 * i, np.uint8))
    vw.release()
    out = tile_video(src, tmp_path / "x3.mp4", 3)
    cap = cv2.VideoCapture(str(out))
    n, shape = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n, shape = n + 1, f.shape
    assert (n, shape) == (3, (24, 96, 3))
