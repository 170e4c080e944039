from __future__ import annotations

import numpy as np
import pytest

from allinone.config import MatchConfig
from allinone.errors import UserError
from allinone.match import Matcher, distance_matrix
from allinone.records import Embedding


def reference_distance(probe: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """Pair by pair, part by part, in float64: |x_p - y_p| or cosine of (x_p, y_p), averaged over parts."""
    n, _, parts = probe.shape
    out = np.zeros((n, len(gallery)))
    for i in range(n):
        for j in range(len(gallery)):
            vals = []
            for k in range(parts):
                a = probe[i, :, k].astype(np.float64)
                b = gallery[j, :, k].astype(np.float64)
                if metric == "euc":
                    vals.append(np.sqrt(((a - b) ** 2).sum()))
                else:
                    vals.append(1.0 - (a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
            out[i, j] = np.mean(vals)
    return out


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_distance_matrix_equals_loop_reference(metric):
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(5, 32, 4)).astype(np.float32)
    gallery = rng.normal(size=(7, 32, 4)).astype(np.float32)
    got = distance_matrix(probe, gallery, metric)
    assert got.shape == (5, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_distance(probe, gallery, metric), rtol=1e-5, atol=1e-5)


def test_distance_matrix_hand_computed():
    # two parts, two channels: part 0 is (3, 0) vs (0, 4), part 1 is (1, 1) vs (1, 2)
    x = np.array([[[3, 1], [0, 1]]], np.float32)  # [1, c=2, p=2]
    y = np.array([[[0, 1], [4, 2]]], np.float32)
    # euc: part 0 → 5, part 1 → 1; mean 3
    assert distance_matrix(x, y, "euc")[0, 0] == pytest.approx(3.0, abs=1e-6)
    # cos: part 0 orthogonal → 0, part 1 → 3 / (sqrt(2) sqrt(5)); 1 - mean
    want = 1 - (0 + 3 / np.sqrt(10)) / 2
    assert distance_matrix(x, y, "cos")[0, 0] == pytest.approx(want, abs=1e-6)
    # identical → 0 in both metrics
    assert distance_matrix(x, x, "euc")[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert distance_matrix(x, x, "cos")[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_cos_ignores_scale_euc_does_not():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 16, 3)).astype(np.float32)
    y = 3 * x
    assert distance_matrix(x, y, "cos")[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert distance_matrix(x, y, "euc")[0, 0] > 1.0


def test_distance_matrix_rejects_bad_input():
    with pytest.raises(ValueError):
        distance_matrix(np.zeros((1, 4, 2)), np.zeros((1, 4, 3)))
    with pytest.raises(ValueError):
        distance_matrix(np.zeros((1, 4, 2)), np.zeros((1, 4, 2)), "l1")


def emb(video: str, track: int, pos: float, n_frames: int = 30) -> Embedding:
    """An embedding at `pos` on a line (channel 0 of both parts), so the euc distance of two is |pos - pos'|."""
    feature = np.zeros((4, 2), np.float32)
    feature[0] = pos
    return Embedding(video, track, feature, n_frames)


def cfg(threshold: float = 100.0, min_frames: int = 10) -> MatchConfig:
    return MatchConfig(metric="euc", threshold=threshold, min_frames=min_frames)


def test_hungarian_beats_greedy():
    # 1-D positions: X=0, Y=3; A=1 (A-X 1, A-Y 2), B=-1.5 (B-X 1.5, B-Y 4.5).
    # Nearest neighbour sends both A and B to X; the best one-to-one pairing is A→Y, B→X (3.5 < 5.5).
    gallery = [emb("g", 1, 0.0), emb("g", 2, 3.0)]
    probes = [emb("p", 10, 1.0), emb("p", 11, -1.5)]
    d = distance_matrix(np.stack([p.feature for p in probes]), np.stack([g.feature for g in gallery]))
    assert d.argmin(axis=1).tolist() == [0, 0]  # greedy would give both probes gallery track 1
    out = Matcher(cfg())(probes, gallery)
    assert [(o.probe_track, o.status, o.gallery_track) for o in out] == [(10, "match", 2), (11, "match", 1)]
    assert out[0].distance == pytest.approx(2.0) and out[1].distance == pytest.approx(1.5)
    assert [r[1] for r in out[0].ranking] == [1, 2]  # ranking stays nearest-first, whatever was assigned
    assert out[0].ranking[0][2] == pytest.approx(1.0)


def test_threshold_makes_unknown():
    gallery = [emb("g", 1, 0.0), emb("g", 2, 10.0)]
    probes = [emb("p", 1, 0.5), emb("p", 2, 14.0)]
    out = Matcher(cfg(threshold=3.0))(probes, gallery)
    assert (out[0].status, out[0].gallery_track, out[0].gallery_video) == ("match", 1, "g")
    assert (out[1].status, out[1].gallery_track, out[1].gallery_video) == ("unknown", None, None)
    assert out[1].distance == pytest.approx(4.0)  # to its assigned track 2
    assert [r[1] for r in out[1].ranking] == [2, 1]


def test_too_short_probe_and_gallery():
    gallery = [emb("g", 1, 0.0, n_frames=5), emb("g", 2, 10.0)]
    probes = [emb("p", 1, 0.1, n_frames=9), emb("p", 2, 0.2)]
    out = Matcher(cfg(min_frames=10))(probes, gallery)
    assert (out[0].status, out[0].distance, out[0].ranking, out[0].gallery_track) == ("too_short", None, [], None)
    # the short gallery track (nearest by far) is not a candidate: only track 2 is left
    assert out[1].status == "match" and out[1].gallery_track == 2
    assert [r[1] for r in out[1].ranking] == [2]


def test_more_probes_than_gallery():
    gallery = [emb("g", 1, 0.0)]
    probes = [emb("p", 1, 0.5), emb("p", 2, 0.2), emb("p", 3, 3.0)]
    out = Matcher(cfg())(probes, gallery)
    assert len(out) == 3
    assert [o.status for o in out] == ["unknown", "match", "unknown"]
    assert out[1].gallery_track == 1
    assert out[0].distance == pytest.approx(0.5) and out[2].distance == pytest.approx(3.0)  # to the nearest


def test_assignment_is_per_probe_video():
    # Two probe videos each showing the person of gallery track 1: both may match it.
    gallery = [emb("g1", 1, 0.0), emb("g2", 7, 5.0)]
    probes = [emb("pa", 1, 0.1), emb("pb", 1, 0.2), emb("pa", 2, 4.0)]
    out = Matcher(cfg())(probes, gallery)
    assert [(o.probe_video, o.probe_track, o.gallery_video, o.gallery_track) for o in out] == [
        ("pa", 1, "g1", 1), ("pb", 1, "g1", 1), ("pa", 2, "g2", 7)]


def test_empty_gallery():
    probes = [emb("p", 1, 0.0), emb("p", 2, 1.0, n_frames=2)]
    out = Matcher(cfg())(probes, [])
    assert [o.status for o in out] == ["unknown", "too_short"]
    assert out[0].distance is None and out[0].ranking == []
    assert Matcher(cfg())([], [emb("g", 1, 0.0)]) == []


def test_bad_metric_is_user_error():
    with pytest.raises(UserError):
        Matcher(MatchConfig(metric="manhattan"))
