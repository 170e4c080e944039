"""The evaluate command's CMC curve and people-counted impostor independence, against hand derivations."""
from __future__ import annotations

import numpy as np

from allinone.evaluate.tables import cmc_curve, independent_impostors


def test_cmc_by_hand():
    # probe a: its mate (gallery 'a') is 2nd nearest; probe b: nearest; probe c has no mate and is not counted
    dist = np.array([[0.1, 0.2, 0.3], [0.5, 0.4, 0.1], [0.1, 0.1, 0.1]])
    assert cmc_curve(dist, np.array(["a", "b", "c"]), np.array(["x", "a", "b"])) == [0.5, 1.0, 1.0]
    assert cmc_curve(dist, np.array(["q", "r", "s"]), np.array(["x", "a", "b"])) == []
    assert len(cmc_curve(np.zeros((1, 30)), np.array(["a"]), np.array(["a"] * 30))) == 20  # max_rank


def test_independence_is_counted_in_disjoint_pairs_of_people():
    labels = np.array(["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4"])  # two sequences each
    everyone = np.arange(8)
    assert independent_impostors(everyone, everyone, labels, set()) == 2  # 4 people: 2 disjoint pairs
    assert independent_impostors(everyone[:2], everyone, labels, set()) == 1  # one probe person
    # conditions of one evaluation share ``used``: probes p1, p2 take the pair (p1, p2), and p2 cannot be a probe
    # person of a second pair; a later condition finds (p3, p4) only, then nobody is left
    used: set = set()
    assert independent_impostors(everyone[:4], everyone, labels, used) == 1 and used == {"p1", "p2"}
    assert independent_impostors(everyone, everyone, labels, used) == 1
    assert independent_impostors(everyone, everyone, labels, used) == 0
