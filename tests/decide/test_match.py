from __future__ import annotations

import numpy as np
import pytest

from allinone.config import MatchConfig
from allinone.errors import UserError
from allinone.decide.assign import assign_identities, components
from allinone.decide.distance import distance_matrix
from allinone.decide.match import Matcher, identity_distances, margin_pairs
from allinone.records import Embedding, Identity
from tests.helpers import assert_float32_distances, exact_distance, float32_distance_bound


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


@pytest.mark.parametrize("metric", ["euc", "cos"])
@pytest.mark.parametrize("spread", [1e-3, 0.1])
def test_float32_bound_holds_for_long_vectors_at_small_distances(metric, spread):
    """The tests' tolerance for two float32 paths is the formula's own error bound: on vectors of large norm
    (|a_k|^2 ~ 2,500) a short way apart, both of distance_matrix's products (few probes, many probes) stay within
    it of the float64 distance, and a difference beyond it is caught."""
    rng = np.random.default_rng(7)
    gallery = (rng.normal(size=(40, 256, 16)) * 3.0 + 0.5).astype(np.float32)
    probe = (gallery[:9] + rng.normal(size=(9, 256, 16)) * spread).astype(np.float32)
    exact = exact_distance(probe, gallery, metric)
    np.testing.assert_allclose(exact, reference_distance(probe, gallery, metric), rtol=1e-12, atol=1e-12)
    bound = float32_distance_bound(probe, gallery, metric)
    for n in (1, 4, 9):  # the block product and the batched product
        assert_float32_distances(distance_matrix(probe[:n], gallery, metric), exact[:n], bound[:n])
    if metric == "euc" and spread == 0.1:
        # not vacuous: under a tenth of the nearest distances it guards, a thousandth of the far ones
        assert (bound / exact).max() < 0.1 and np.median(bound / exact) < 1e-3
    wrong = distance_matrix(probe, gallery, metric).astype(np.float64)
    wrong[3, 5] = exact[3, 5] + 1.5 * bound[3, 5]
    with pytest.raises(AssertionError):
        assert_float32_distances(wrong, exact, bound)


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


def emb(video: str, track: int, pos: float, n_frames: int = 30, span: tuple[int, int] = (0, 99)) -> Embedding:
    """An embedding at `pos` on a line (channel 0 of both parts), so the euc distance of two is |pos - pos'|."""
    feature = np.zeros((4, 2), np.float32)
    feature[0] = pos
    return Embedding(video, track, feature, n_frames, span[0], span[1])


def ident(name: str, *members: Embedding) -> Identity:
    return Identity(name, tuple(members), key=members[0].track_id)


def gallery(*positions: float) -> list[Identity]:
    """G1, G2, ... at the given positions, one track each."""
    return [ident(f"G{k}", emb("g", k, x)) for k, x in enumerate(positions, 1)]


def cfg(min_frames: int = 10) -> MatchConfig:
    return MatchConfig(metric="euc", min_frames=min_frames)


def summary(decisions):
    return [(d.probe_track, d.status, d.identity, d.reason) for d in decisions]


def test_the_stranger_does_not_take_the_known_persons_identity():
    # The issue's case: A is 5 from G1 (95 from G2); stranger B is 14 from G1 and 114 from G2; threshold 15.
    # Raw-distance assignment first would pair A-G2 and B-G1 (95 + 14 < 5 + 114): A unknown, the stranger matched.
    g = gallery(0.0, 100.0)
    a, b = emb("p", 1, 5.0), emb("p", 2, -14.0)
    out = Matcher(cfg())([a, b], g, threshold=15.0)
    assert summary(out) == [(1, "match", "G1", None), (2, "unknown", None, "taken")]
    assert out[0].distance == pytest.approx(5.0) and out[1].distance == pytest.approx(14.0)


def test_tracks_apart_in_time_may_share_an_identity():
    # the same two probe tracks, one after the other: both are within 15 of G1 and nothing stops them
    g = gallery(0.0, 100.0)
    a, b = emb("p", 1, 5.0, span=(0, 50)), emb("p", 2, -14.0, span=(51, 90))
    out = Matcher(cfg())([a, b], g, threshold=15.0)
    assert summary(out) == [(1, "match", "G1", None), (2, "match", "G1", None)]


def test_the_re_entering_person_is_recognised_both_times():
    g = gallery(0.0, 50.0)
    first, other, again = emb("p", 1, 1.0, span=(0, 40)), emb("p", 2, 49.0, span=(10, 60)), \
        emb("p", 3, 2.0, span=(70, 120))
    out = Matcher(cfg())([first, other, again], g, threshold=5.0)
    assert summary(out) == [(1, "match", "G1", None), (2, "match", "G2", None), (3, "match", "G1", None)]


def test_overlapping_tracks_solved_by_least_total_distance():
    # X=0, Y=3; A=1 (1 and 2), B=-1.5 (1.5 and 4.5), seen together. Nearest for both is X; pairing A-Y, B-X costs
    # 2 + 1.5 = 3.5 < A-X, B-Y 1 + 4.5 = 5.5.
    g = gallery(0.0, 3.0)
    out = Matcher(cfg())([emb("p", 10, 1.0), emb("p", 11, -1.5)], g, threshold=10.0)
    assert summary(out) == [(10, "match", "G2", None), (11, "match", "G1", None)]
    assert out[0].distance == pytest.approx(2.0) and out[1].distance == pytest.approx(1.5)
    assert out[0].ranking == [("G1", pytest.approx(1.0)), ("G2", pytest.approx(2.0))]  # nearest first, always


def test_two_matches_when_their_margins_add_up_to_more():
    # A: G1 at 1, G2 at 3; B: G1 at 2, G2 at 6 > threshold 5. Margins: A-G1 alone 4; A-G2 2 + B-G1 3 = 5: both
    # match (A-G2, B-G1).
    g = gallery(0.0, 4.0)
    out = Matcher(cfg())([emb("p", 1, 1.0), emb("p", 2, -2.0)], g, threshold=5.0)
    assert summary(out) == [(1, "match", "G2", None), (2, "match", "G1", None)]


def test_a_chain_of_overlaps_lets_the_ends_share():
    # A (0-10) overlaps B (8-20), B overlaps C (18-30), A and C never meet. One identity within the threshold for
    # all: A and C take it (two matches), B is unknown because it is taken; B alone would give one match.
    g = gallery(0.0)
    tracks = [emb("p", 1, 1.0, span=(0, 10)), emb("p", 2, 0.5, span=(8, 20)), emb("p", 3, 1.0, span=(18, 30))]
    out = Matcher(cfg())(tracks, g, threshold=2.0)
    assert summary(out) == [(1, "match", "G1", None), (2, "unknown", None, "taken"), (3, "match", "G1", None)]


def test_all_too_far_is_no_candidate_with_the_nearest_distance():
    g = gallery(0.0, 10.0)
    out = Matcher(cfg())([emb("p", 1, 4.0), emb("p", 2, 30.0)], g, threshold=3.0)
    assert summary(out) == [(1, "unknown", None, "no_candidate"), (2, "unknown", None, "no_candidate")]
    assert out[0].distance == pytest.approx(4.0) and out[1].distance == pytest.approx(20.0)
    assert [r[0] for r in out[1].ranking] == ["G2", "G1"]


def test_threshold_is_inclusive():
    out = Matcher(cfg())([emb("p", 1, 3.0)], gallery(0.0), threshold=3.0)
    assert out[0].status == "match"


def test_empty_gallery_and_too_short():
    probes = [emb("p", 1, 0.0), emb("p", 2, 1.0, n_frames=2)]
    out = Matcher(cfg())(probes, [], threshold=1.0)
    assert summary(out) == [(1, "unknown", None, "no_gallery"), (2, "too_short", None, "too_few_silhouettes")]
    assert out[0].distance is None and out[0].ranking == []
    assert Matcher(cfg())([], gallery(0.0), threshold=1.0) == []


def test_short_gallery_tracks_are_left_out():
    g = [ident("Ann", emb("g", 1, 0.0, n_frames=5), emb("g", 3, 20.0)), ident("G2", emb("g", 2, 1.0, n_frames=9))]
    m = Matcher(cfg(min_frames=10))
    assert [(i.name, [x.track_id for x in i.members]) for i in m.usable(g)] == [("Ann", [3])]
    out = m([emb("p", 1, 0.2)], g, threshold=100.0)
    # only Ann's long track (at 20) counts; G2 has no usable track at all
    assert summary(out) == [(1, "match", "Ann", None)] and out[0].distance == pytest.approx(19.8)
    out = m([emb("p", 1, 0.2)], [g[1]], threshold=100.0)
    assert summary(out) == [(1, "unknown", None, "no_gallery")]


def test_identity_distance_is_the_nearest_of_its_tracks():
    g = [ident("Ann", emb("g", 1, 0.0), emb("g", 4, 10.0)), ident("G2", emb("g", 2, 5.5))]
    d = identity_distances([emb("p", 1, 9.0)], g, "euc")
    np.testing.assert_allclose(d, [[1.0, 3.5]])
    out = Matcher(cfg())([emb("p", 1, 9.0)], g, threshold=2.0)
    assert summary(out) == [(1, "match", "Ann", None)] and out[0].distance == pytest.approx(1.0)


def test_probe_videos_are_decided_independently():
    # two probe videos each showing the person of G1: both may match it, whatever the frame numbers
    g = gallery(0.0, 5.0)
    probes = [emb("pa", 1, 0.1), emb("pb", 1, 0.2), emb("pa", 2, 4.0)]
    out = Matcher(cfg())(probes, g, threshold=10.0)
    assert [(o.probe_video, o.probe_track, o.identity) for o in out] == [("pa", 1, "G1"), ("pb", 1, "G1"),
                                                                          ("pa", 2, "G2")]


def test_the_sure_match_is_kept_the_issue_example():
    # A has X at 0.01 and Y at 0.49, B has only X at 0.48, t = 0.5, seen together. Margins: A-X 0.49 + B unknown
    # = 0.49 against A-Y 0.01 + B-X 0.02 = 0.03: A keeps X, B is unknown (taken). "Most matches first" gave A-Y.
    g = gallery(0.0, 0.5)  # X at 0, Y at 0.5
    a, b = emb("p", 1, 0.01), emb("p", 2, -0.48)  # A: X 0.01, Y 0.49; B: X 0.48, Y 0.98
    out = Matcher(cfg())([a, b], g, threshold=0.5)
    assert summary(out) == [(1, "match", "G1", None), (2, "unknown", None, "taken")]
    assert out[0].distance == pytest.approx(0.01) and out[1].distance == pytest.approx(0.48)


def test_margins_keep_their_order_under_a_huge_threshold():
    # float32 distances and t = 1e9: in float32 every margin t - d would be the same number
    d = np.array([[0.013103], [0.01428]], np.float32)
    rows, cols, w = margin_pairs(d, 1e9)
    assert w[0] > w[1]
    assert assign_identities(rows, cols, w, [(0, 100), (50, 100)]) == [0, None]
    g = gallery(0.0)
    out = Matcher(cfg())([emb("p", 1, 0.0142), emb("p", 2, 0.0131)], g, threshold=1e9)
    assert summary(out) == [(1, "unknown", None, "taken"), (2, "match", "G1", None)]


def brute_force(dist: np.ndarray, t: float, spans) -> float:
    """The best total margin sum(t - d) over every assignment (None or a candidate within t per track) in which
    no two overlapping tracks share an identity."""
    import itertools
    n = len(spans)
    best = 0.0
    for choice in itertools.product(*[[None, *np.flatnonzero(dist[i] <= t)] for i in range(n)]):
        if any(choice[i] is not None and choice[i] == choice[j] and spans[i][0] <= spans[j][1]
               and spans[j][0] <= spans[i][1] for i in range(n) for j in range(i + 1, n)):
            continue
        best = max(best, sum(t - dist[i, c] for i, c in enumerate(choice) if c is not None))
    return best


def check_feasible(got, spans, dist, t):
    for i, c in enumerate(got):
        assert c is None or dist[i, c] <= t
        for j in range(i + 1, len(got)):
            if c is not None and c == got[j]:
                assert spans[i][1] < spans[j][0] or spans[j][1] < spans[i][0]


def margin_of(got, dist, t) -> float:
    return sum(t - dist[i, c] for i, c in enumerate(got) if c is not None)


def test_assignment_is_optimal_on_random_cases():
    # brute force over every assignment: the largest total margin, no shared identity among overlapping tracks
    rng = np.random.default_rng(3)
    t = 6.0
    for _ in range(40):
        n, k = int(rng.integers(2, 7)), int(rng.integers(1, 4))
        dist = rng.uniform(0, 10, size=(n, k))
        starts = rng.integers(0, 50, size=n)
        spans = [(int(s), int(s + rng.integers(0, 30))) for s in starts]
        want = brute_force(dist, t, spans)
        for exact in (False, True):
            got = assign_identities(*margin_pairs(dist, t), spans, exact=exact)
            check_feasible(got, spans, dist, t)
            assert margin_of(got, dist, t) == pytest.approx(want, abs=1e-7)


def test_one_moment_fast_path_agrees_with_the_integer_program():
    # groups where everyone is in view together go through the Hungarian fast path; the same cases through the
    # integer program (exact=True) must give the same total margin, and here (no ties) the same assignment
    rng = np.random.default_rng(11)
    t = 5.0
    for _ in range(60):
        n, k = int(rng.integers(2, 9)), int(rng.integers(1, 6))
        dist = rng.uniform(0, 10, size=(n, k))
        spans = [(int(rng.integers(0, 10)), int(rng.integers(20, 40))) for _ in range(n)]  # all share 10..20
        fast = assign_identities(*margin_pairs(dist, t), spans)
        exact = assign_identities(*margin_pairs(dist, t), spans, exact=True)
        check_feasible(fast, spans, dist, t)
        assert fast == exact


def test_decomposition_agrees_with_one_program_on_a_long_video():
    # 300 tracks along a long video (chains of overlaps), 30 identities: components + fast paths vs one program
    rng = np.random.default_rng(5)
    n, k, t = 300, 30, 0.5
    starts = np.sort(rng.integers(0, 6000, size=n))
    spans = np.stack([starts, starts + rng.integers(20, 200, size=n)], axis=1)
    dist = rng.uniform(0.2, 1.5, size=(n, k))
    dist[np.arange(n), rng.integers(0, k, size=n)] = rng.uniform(0.0, 0.45, size=n)
    fast = assign_identities(*margin_pairs(dist, t), spans)
    exact = assign_identities(*margin_pairs(dist, t), spans, exact=True)
    check_feasible(fast, spans.tolist(), dist, t)
    assert margin_of(fast, dist, t) == pytest.approx(margin_of(exact, dist, t), abs=1e-7)
    assert fast == exact


def test_components_follow_overlaps_through_shared_identities():
    # tracks 0-1 overlap and share identity 0; track 2 overlaps 1 but shares nothing with it; 3 shares identity 0
    # with 0 but comes after everyone; 4 overlaps 3 via identity 1 only
    spans = np.array([[0, 10], [5, 20], [15, 30], [40, 50], [45, 60]])
    rows = np.array([0, 1, 2, 3, 3, 4])
    cols = np.array([0, 0, 1, 0, 1, 1])
    groups = sorted(sorted(set(rows[g].tolist())) for g in components(rows, cols, spans))
    assert groups == [[0, 1], [2], [3, 4]]


def test_bad_metric_is_user_error():
    with pytest.raises(UserError):
        Matcher(MatchConfig(metric="manhattan"))


def test_a_match_names_the_identitys_track_it_is_nearest_to():
    """An identity of two tracks far apart: a probe near the second is matched through the second (the report
    shows that track's pictures), one near the first through the first; an unknown names none."""
    ann = Identity("Ann", (emb("g", 1, 0.0), emb("g", 2, 5.0)))
    probes = [emb("p", 1, 5.1), emb("p", 2, 0.2, span=(200, 300)), emb("p", 3, 50.0, span=(400, 500))]
    out = Matcher(MatchConfig(metric="euc"))(probes, [ann], 1.0)
    assert [(d.status, d.matched) for d in out] == [("match", ("g", 2)), ("match", ("g", 1)), ("unknown", None)]
