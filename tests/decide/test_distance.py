from __future__ import annotations

import numpy as np
import pytest

from allinone.decide.distance import distance_matrix


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_a_pairs_distance_does_not_depend_on_the_batch(metric):
    # gait-like features: a threshold test on one pair must give the same answer however many probes share the call
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(250, 256, 16)).astype(np.float32)
    probes = rng.normal(size=(13, 256, 16)).astype(np.float32)
    alone = np.stack([distance_matrix(p[None], gallery, metric)[0] for p in probes])
    for n in (4, 5, 8, 13):
        together = distance_matrix(probes[:n], gallery, metric)
        assert np.array_equal(together, alone[:n]), f"{n} probes: {(together != alone[:n]).sum()} entries differ"
    # and against a smaller gallery holding the same tracks (a search measures a selection)
    for sel in (slice(0, 3), slice(10, 27), slice(100, 250)):
        assert np.array_equal(distance_matrix(probes[:5], gallery[sel], metric), alone[:5, sel])
