"""Gallery search over large galleries: FAISS shortlist + OpenGait's exact distance, checked against brute force."""
from __future__ import annotations

import numpy as np

from allinone.config import MatchConfig, SearchConfig
from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
from allinone.decide.match import Matcher
from allinone.records import Embedding, TrackResult
from allinone.gallery.search import benchmark, part_distances
from tests.decide.test_match import reference_distance


def test_part_distances_match_the_loop_reference():
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(3, 32, 4)).astype(np.float32)
    gallery = rng.normal(size=(9, 32, 4)).astype(np.float32)
    np.testing.assert_allclose(part_distances(probe, gallery), reference_distance(probe, gallery, "euc"),
                               rtol=1e-5, atol=1e-5)


def test_index_search_agrees_with_brute_force(tmp_path):
    r = benchmark(4000, tmp_path, queries=40, clusters=80, config=SearchConfig(shortlist=100, nprobe=16))
    assert r["factory"].startswith("IVF") and r["identities"] == 4000
    assert r["rank1_agreement"] == 1.0 and r["query_truth"] == 1.0
    assert r["query_latency_ms"]["median"] > 0 and r["index_bytes_per_identity"] > 0


def _population(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, 256, 16)).astype(np.float32)
    return (centers[rng.integers(0, 30, n)] + 0.6 * rng.normal(size=(n, 256, 16))).astype(np.float32)


def test_a_large_gallery_file_is_searched_through_its_index(tmp_path):
    feats = _population(1500)
    model = ModelInfo("ef" * 32, "m.pt", "gaitbase", "euc")
    db = tmp_path / "big.sqlite"
    cfg = SearchConfig(exact_limit=300, shortlist=100, nprobe=16)
    with GalleryStore(db, create=True) as store:
        store.add([Enrolment(f"P{i:04d}", "synthetic", [TrackResult(1, 0, 9, 10, 10, {},
                                                                    Embedding("s", 1, f, 10, 0, 9))])
                   for i, f in enumerate(feats)], model)
        rng = np.random.default_rng(7)
        for target in (3, 777, 1499):
            probe = Embedding("p", 1, feats[target] + 0.2 * rng.normal(size=(256, 16)).astype(np.float32), 30, 0, 29)
            found, info = store.candidates([probe], cfg)
            assert info["mode"] == "index" and 0 < info["identities_compared"] < 1500
            # brute force over the whole gallery, written out plainly: per part L2, averaged over parts
            d = np.sqrt(((feats.astype(np.float64) - probe.feature[None]) ** 2).sum(axis=1)).mean(axis=1)
            best = f"P{int(d.argmin()):04d}"
            dec = Matcher(MatchConfig(metric="euc"))([probe], found, threshold=1e9)[0]
            assert dec.identity == best == f"P{target:04d}"
        index_file = tmp_path / "big.sqlite.faiss"
        stamp = index_file.stat().st_mtime_ns
        store.candidates([probe], cfg)
        assert index_file.stat().st_mtime_ns == stamp  # kept and reused
        store.add([Enrolment("New", "synthetic", [TrackResult(1, 0, 9, 10, 10, {},
                                                              Embedding("s", 1, feats[0], 10, 0, 9))])], model)
        store.candidates([probe], cfg)
        assert index_file.stat().st_mtime_ns != stamp  # the gallery changed: rebuilt
        found, info = store.candidates([probe], SearchConfig(exact_limit=10_000))
        assert info["mode"] == "exact" and len(found) == 1501
