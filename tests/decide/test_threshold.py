"""Thresholds and their evidence: impostor pairs (seen together, near-duplicates out, gallery identities), the\nFPIR stated for every basis, none without evidence, calibration files (v2, old, malformed); gallery names."""
from __future__ import annotations

import argparse
import logging
import math

import numpy as np
import pytest

from allinone.errors import UserError
from allinone.decide.identities import check_named, gallery_identities, parse_identity
from allinone.records import Embedding, Identity
from allinone.decide.calibration import impostor_record, load_calibration, write_calibration
from allinone.decide.impostors import CoVisibility, is_duplicate, run_pairs
from allinone.decide.threshold import check_threshold, resolve_threshold, threshold_at_far, without_threshold


def emb(video, track, pos, span=(0, 99), n_frames=30, channels=4):
    f = np.zeros((channels, 2), np.float32)
    f[0] = pos
    return Embedding(video, track, f, n_frames, *span)


@pytest.mark.parametrize("value, metric", [(math.nan, "euc"), (math.inf, "euc"), (-1.0, "euc"), (2.5, "cos"),
                                           (-0.1, "cos")])
def test_bad_thresholds_are_refused(value, metric):
    with pytest.raises(UserError) as err:
        check_threshold(value, metric)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value, metric", [(0.0, "euc"), (1e9, "euc"), (2.0, "cos"), (0.0, "cos")])
def test_good_thresholds_pass(value, metric):
    check_threshold(value, metric)


def test_threshold_at_far_hand_cases():
    d = np.arange(1, 11, dtype=float)[::-1]  # 10 impostor distances 1..10, unsorted
    assert threshold_at_far(d, 0.1) == 1.0  # k = 1 → d_1
    assert threshold_at_far(d, 0.25) == 2.0  # k = floor(2.5) = 2 → d_2
    below = threshold_at_far(d, 0.01)  # k = 0: no impostor accepted
    assert below < 1.0 and below == np.nextafter(1.0, 0)
    assert threshold_at_far(np.arange(1000.0) + 1, 0.001) == 1.0  # k = 1 exactly at the grid edge
    assert threshold_at_far(np.arange(999.0) + 1, 0.001) < 1.0  # k = floor(0.999) = 0
    assert threshold_at_far([0.0, 3.0], 0.01) == 0.0


def test_covisibility_counts_frames_together_and_near_duplicate_boxes():
    cv = CoVisibility()
    a, b, c = [0, 0, 10, 20], [1, 0, 11, 20], [50, 0, 60, 20]  # a-b: IoU 19/21 > 0.5; c apart
    for _ in range(6):
        cv.add(np.array([a, b, c], float), np.array([1, 2, 3]))
    for _ in range(4):
        cv.add(np.array([a, c], float), np.array([1, 3]))
    cv.add(np.array([a], float), np.array([1]))  # alone: nothing
    assert cv.rows("v") == [["v", 1, 2, 6, 6], ["v", 1, 3, 10, 0], ["v", 2, 3, 6, 0]]
    assert is_duplicate(6, 6) and is_duplicate(6, 4) and not is_duplicate(6, 3)  # IoU > 0.5 in more than half


def test_run_pairs_seen_together_gallery_identities_and_duplicates_left_out():
    g = [emb("g", 1, 0.0), emb("g", 2, 3.0), emb("g", 3, 5.0, n_frames=3)]
    p = [emb("p", 1, 10.0), emb("p", 2, 14.0), emb("p", 3, 14.5)]
    together = [["p", 1, 2, 20, 0], ["p", 2, 3, 20, 19], ["p", 1, 3, 4, 0], ["g", 1, 2, 30, 0]]
    idents = [Identity("A", (g[0],)), Identity("B", (g[1],)), Identity("C", (g[2],))]
    rp = run_pairs(g + p, together, idents, "euc", min_overlap=5, min_frames=10)
    # p1-p2 (4 apart); p2-p3 a near-duplicate; p1-p3 only 4 frames together; g1-g2 seen together and also two
    # identities (counted once); g3 too short
    assert sorted(rp.keys) == [(("run", "g", 1), ("run", "g", 2)), (("run", "p", 1), ("run", "p", 2))]
    d = dict(zip(rp.keys, rp.distances))
    assert d[(("run", "p", 1), ("run", "p", 2))] == pytest.approx(4.0)
    assert d[(("run", "g", 1), ("run", "g", 2))] == pytest.approx(3.0)
    assert (rp.seen_together, rp.gallery, rp.duplicates) == (2, 0, 1)
    rp = run_pairs(g + p, [], idents, "euc", min_overlap=5, min_frames=10)
    assert rp.keys == [(("run", "g", 1), ("run", "g", 2))] and rp.gallery == 1


def test_a_given_threshold_states_its_estimated_fpir(caplog):
    g = [emb("g", i, float(i)) for i in range(1, 5)]  # 4 identities at positions 1..4
    idents = [Identity(f"G{e.track_id}", (e,)) for e in g]
    t = resolve_threshold(1.2, "euc", g, idents, [], target_fpir=0.01, min_overlap=5, min_frames=10)
    j = t.to_json()
    # both parts differ by |i - j| in channel 0, so the distance is |i - j|: 1 x3, 2 x2, 3; 3 of 6 within 1.2
    assert (j["value"], j["basis"], j["gallery_size"]) == (1.2, "user", 4)
    assert j["fpir"]["per_pair_rate"] == pytest.approx(3 / 6)
    assert j["fpir"]["estimate"] == pytest.approx(1 - (1 - 3 / 6) ** 4)
    assert j["evidence"]["pairs"] == 6 and j["evidence"]["independent_pairs"] == 2  # (1,2), (3,4)
    assert "estimated FPIR" in t.detail["statement"] and "6 impostor pair(s), 2 independent" in t.detail["statement"]


def test_auto_with_too_few_pairs_says_the_target_is_unsupported(caplog):
    g = [emb("g", 1, 0.0), emb("g", 2, 3.0)]
    idents = [Identity("A", (g[0],)), Identity("B", (g[1],))]
    with caplog.at_level(logging.WARNING):
        t = resolve_threshold(None, "euc", g, idents, [], target_fpir=0.01, min_overlap=5, min_frames=10)
    assert t.basis == "auto" and t.value == np.nextafter(3.0, 0)  # one pair at 3: just below it
    # N = 2: f* = 1 - 0.99^(1/2) = 0.0050126; zero of n pairs within shows F <= f* once 1 - 0.025^(1/n) <= f*,
    # n >= ln 0.025 / ln(1 - f*) = 3.6889 / 0.0050252 = 734.1
    assert t.detail["fpir"]["supported"] is False and t.detail["pairs_needed"] == 735
    assert "cannot show FPIR <= 0.01" in caplog.text and "cannot show" in t.detail["statement"]


def test_no_evidence_means_no_threshold_and_unknown_with_its_reason(caplog):
    lone = [emb("g", 1, 0.0), emb("p", 1, 10.0)]
    idents = [Identity("A", (lone[0],))]
    with caplog.at_level(logging.WARNING):
        t = resolve_threshold(None, "euc", lone, idents, [], target_fpir=0.01, min_overlap=5, min_frames=10)
    assert t.basis == "none" and t.to_json()["value"] is None and t.to_json()["fpir"] is None
    assert "no_threshold_evidence" in caplog.text
    from allinone.decide.match import Matcher
    from allinone.config import MatchConfig
    d = without_threshold(Matcher(MatchConfig(metric="euc"))([lone[1]], idents, t.value))
    assert [(x.status, x.reason) for x in d] == [("unknown", "no_threshold_evidence")]


def test_a_calibration_distribution_supports_a_gallery_of_another_size(tmp_path, caplog):
    # a uniform impostor distribution on (0, 1]: 200,000 pairs, all independent, stored as a file
    d = np.arange(1, 200_001) / 200_000
    rec = {"checkpoint": "x.pt", "checkpoint_sha256": "ab" * 32, "metric": "euc",
           "impostor": impostor_record(d, 200_000)}
    path = write_calibration(tmp_path / "c.json", rec)
    cal = load_calibration(path, "ab" * 32, "euc")
    assert cal.source.count == 200_000 and len(cal.source.lowest) == 20_000
    idents = [Identity(f"G{i}", (emb("g", i, 100.0 * i),)) for i in range(1, 6)]  # 5 identities far apart
    every = [m for i in idents for m in i.members]
    for n in (5, 1):
        t = resolve_threshold(None, "euc", every, idents[:n], [], target_fpir=0.01, min_overlap=5, min_frames=10,
                              calibration=cal)
        f_star = 1 - 0.99 ** (1 / n)
        assert t.basis == "auto" and t.detail["fpir"]["supported"]
        assert t.value < f_star and t.detail["fpir"]["ci95"][1] <= 0.01  # the upper bound within the target
        assert t.detail["evidence"]["sources"]["calibration"]["pairs"] == 200_000
    # N = 1 reaches the stored tail's edge (0.1): counted by the quantile table beyond it
    assert t.value == pytest.approx(0.0096, abs=4e-4)


def test_old_and_malformed_calibration_files(tmp_path, caplog):
    old = write_calibration(tmp_path / "old.json", {"checkpoint_sha256": "ab" * 32, "metric": "euc",
                                                    "threshold": 0.7})
    with caplog.at_level(logging.WARNING):
        cal = load_calibration(old, "ab" * 32, "euc")
    assert cal.source is None and cal.threshold == 0.7 and "old calibration file" in caplog.text
    g = [emb("g", 1, 0.0)]
    t = resolve_threshold(None, "euc", g, [Identity("A", (g[0],))], [], target_fpir=0.01, min_overlap=5,
                          min_frames=10, calibration=cal)
    assert (t.value, t.basis, t.to_json()["fpir"]) == (0.7, "calibrated", None)
    good = impostor_record(np.array([0.5, 1.0, 2.0]), 2)
    for field_, bad in [("count", "3"), ("lowest", [1.0, "x"]), ("lowest", [2.0, 1.0]), ("independent", 9),
                        ("quantiles", {"p": [0.0, 1.0], "d": [2.0]})]:
        path = write_calibration(tmp_path / "bad.json", {"checkpoint_sha256": "ab" * 32, "metric": "euc",
                                                         "impostor": {**good, field_: bad}})
        with pytest.raises(UserError) as err:
            load_calibration(path, "ab" * 32, "euc")
        assert str(path) in str(err.value) and "impostor" in str(err.value)


def test_parse_identity():
    assert parse_identity("Ann=3") == ("Ann", (3,))
    assert parse_identity("Bob Smith=1,4") == ("Bob Smith", (1, 4))
    for bad in ("Ann", "=3", "Ann=", "Ann=x", "Ann=0", "A,b=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_identity(bad)


def test_gallery_identities_default_and_named(caplog):
    g = [emb("g", 1, 0), emb("g", 2, 1), emb("g", 5, 2)]
    ids = gallery_identities(g)
    assert [(i.name, i.key, [m.track_id for m in i.members]) for i in ids] == [("G1", 1, [1]), ("G2", 2, [2]),
                                                                               ("G5", 5, [5])]
    ids = gallery_identities(g, (("Ann", (5, 1)),))
    assert [(i.name, i.key, [m.track_id for m in i.members]) for i in ids] == [("Ann", 1, [5, 1]), ("G2", 2, [2])]
    with caplog.at_level(logging.WARNING):
        ids = gallery_identities(g, (("Ann", (1, 9)),))
    assert "9" in caplog.text and [i.name for i in ids] == ["Ann", "G2", "G5"]
    with pytest.raises(UserError):
        gallery_identities(g, (("Ann", (1, 9)),), strict=True)
    with pytest.raises(UserError, match="G2"):
        gallery_identities(g, (("G2", (1,)),))  # would collide with track 2's default name
    with pytest.raises(UserError):
        check_named((("Ann", (1,)), ("Ann", (2,))))
    with pytest.raises(UserError):
        check_named((("Ann", (1,)), ("Bob", (1,))))


def test_target_fpir_flag_takes_rates_strictly_between_0_and_1():
    from allinone.cli import build_parser
    from allinone.commands.args import fpir_arg

    assert fpir_arg("0.05") == 0.05
    for bad in ("0", "1", "-0.1", "x", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            fpir_arg(bad)
    a = build_parser().parse_args(["--gallery", "g.mp4", "--probe", "p.mp4", "--target-fpir", "0.001",
                                   "--embedding", "embed_2"])
    from allinone.commands.args import config_from_args
    c = config_from_args(a)
    assert (c.match.target_fpir, c.gait.embedding) == (0.001, "embed_2")


def test_run_evidence_is_counted_in_people_not_tracks():
    # three gallery identities of four tracks each (one person's tracks across videos) and one probe video with
    # two people seen together: 3 x 4 tracks make 48 gallery pairs but one disjoint pair of people; the video's
    # pair may be the same people again, so the count is the larger of the two scopes, 1
    idents = [Identity(f"G{i}", tuple(emb(f"v{k}", i, 10.0 * i + k) for k in range(4))) for i in range(3)]
    every = [m for i in idents for m in i.members] + [emb("p", 1, 100.0), emb("p", 2, 200.0)]
    t = resolve_threshold(1.0, "euc", every, idents, [["p", 1, 2, 20, 0]], target_fpir=0.01, min_overlap=5,
                          min_frames=10)
    ev = t.detail["evidence"]
    assert ev["pairs"] == 48 + 1 and ev["independent_pairs"] == 1
    # a fourth identity makes two disjoint pairs of people in the gallery
    idents.append(Identity("G3", (emb("v0", 3, 500.0),)))
    t = resolve_threshold(1.0, "euc", every + list(idents[3].members), idents, [["p", 1, 2, 20, 0]],
                          target_fpir=0.01, min_overlap=5, min_frames=10)
    assert t.detail["evidence"]["independent_pairs"] == 2
