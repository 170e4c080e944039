"""A long run re-decided: run.json keeps a few runners-up per track and every distance goes to distances.npz; the
report keeps to cards for the first tracks and a table, and its heat map to what can be read. The run folder is made
by scripts/fake_long_run.py (the real format; rematch measured at 10,000 tracks in the README)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from allinone.commands.rematch import rematch
from tests.conftest import REPO

TRACKS, IDENTITIES = 300, 130  # more identities than a readable heat map has columns


def _fake():
    spec = importlib.util.spec_from_file_location("fake_long_run", REPO / "scripts/fake_long_run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    (root / "raw").mkdir()
    _fake().write_raw(root / "raw", TRACKS, IDENTITIES, 0.1, seed=1)
    first = rematch(root / "raw", "keep", output=root, name="first")
    return root, first, rematch(first, "keep", output=root, name="again")


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Part-averaged euclidean, float64, from the two stored features."""
    return float(np.mean(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=0)))


def test_run_json_keeps_the_nearest_few_and_every_distance_is_beside_it(long_run):
    root, run, _ = long_run
    m = json.loads((run / "run.json").read_text())
    with np.load(run / m["distances_file"], allow_pickle=False) as f:
        names, d = [str(x) for x in f["identity"]], f["distance"]
        keys = list(zip([str(v) for v in f["probe_video"]], f["probe_track"].tolist()))
    assert d.shape == (TRACKS, IDENTITIES) and len(names) == IDENTITIES
    feats = {(v["name"], t["id"]): np.load(run / t["feature"]) for v in m["videos"] for t in v["tracks"]}
    rng = np.random.default_rng(0)
    for r, c in zip(rng.integers(0, TRACKS, 20), rng.integers(0, IDENTITIES, 20)):
        want = _distance(feats[keys[r]], feats[("gallery", int(names[c][1:]))])
        assert d[r, c] == pytest.approx(want, rel=1e-5)
    row = {k: i for i, k in enumerate(keys)}
    for x in m["matches"]:
        got = [y["distance"] for y in x["ranking"]]
        assert len(got) == 10 and got == sorted(got)
        assert got == pytest.approx(np.sort(d[row[(x["probe_video"], x["probe_track"])]])[:10], abs=1e-6)
    assert (run / "run.json").stat().st_size < 2500 * TRACKS  # about 1 KB a track, not one entry per identity


def test_the_report_pages_its_cards_and_summarises_the_distances(long_run):
    import cv2

    _, run, _ = long_run
    page = (run / "report.html").read_text()
    assert page.count("class=\"card ") == 200 and page.count("<tr><td>P") == TRACKS
    assert "cards for the first 200 of 300 probe tracks" in page
    img = cv2.imread(str(run / "heatmap.png"))
    assert img.shape[0] < 1000 and img.shape[1] < 1500  # a summary picture, not a 300 x 130 heat map


def test_rematch_of_the_rematch_is_the_same_bit_for_bit(long_run):
    _, run, again = long_run
    a, b = (json.loads((x / "run.json").read_text()) for x in (run, again))
    assert a["matches"] == b["matches"]
    assert (run / "distances.npz").read_bytes() == (again / "distances.npz").read_bytes()
