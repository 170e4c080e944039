"""Large-gallery search: every identity within the threshold is found, on adversarial probes, checked against brute
force written out here from OpenGait's formula (per part: euclidean distance, or 1 - cosine; averaged over parts)."""
from __future__ import annotations

import numpy as np
import pytest

from allinone.config import MatchConfig, SearchConfig
from allinone.decide.match import Matcher
from allinone.gallery.search import BoundIndex
from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
from allinone.records import Embedding, TrackResult
from tests.helpers import at_once

C, P = 32, 16


def brute(probe: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """[n] OpenGait distances of one probe [c, p] to gallery [n, c, p], float64, part by part."""
    a = probe.astype(np.float64)
    g = gallery.astype(np.float64)
    if metric == "euc":
        return np.sqrt(((g - a[None]) ** 2).sum(axis=1)).mean(axis=1)
    cos = (g * a[None]).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(a, axis=0)[None] + 1e-30)
    return (1 - cos).mean(axis=1)


def _gallery(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, C, P))
    return (centers[rng.integers(0, 12, n)] + 0.6 * rng.normal(size=(n, C, P))).astype(np.float32)


def _adversarial(feats: np.ndarray, metric: str, seed: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """Gallery with planted hard cases, and the probes aimed at them."""
    rng = np.random.default_rng(seed)
    g = feats.copy()
    probes = []
    # occluded: 2 of 16 parts replaced (far off) or zeroed; the rest is the target
    for target, how in ((5, "replaced"), (17, "zeroed"), (29, "replaced")):
        q = g[target] + 0.05 * rng.normal(size=(C, P)).astype(np.float32)
        parts = rng.choice(P, 2, replace=False)
        q[:, parts] = 0.0 if how == "zeroed" else 8 * rng.normal(size=(C, 2)).astype(np.float32)
        probes.append(q)
    # scaled: the gallery track points the probe's way at 5x its length (cos distance ~0, L2 large)
    q = rng.normal(size=(C, P)).astype(np.float32)
    g[40] = 5 * q
    probes.append(q + 0.01 * rng.normal(size=(C, P)).astype(np.float32))
    # near-duplicates: 25 identities almost identical, the probe among them
    base = rng.normal(size=(C, P)).astype(np.float32)
    for k in range(60, 85):
        g[k] = base + 0.02 * rng.normal(size=(C, P)).astype(np.float32)
    probes.append(base + 0.02 * rng.normal(size=(C, P)).astype(np.float32))
    return g, probes


def _threshold(q: np.ndarray, g: np.ndarray, metric: str) -> float:
    """A threshold that lets through 31 tracks for this probe, at least its planted target (half way between two
    distances, so float32 rounding cannot move a track across it)."""
    d = np.sort(brute(q, g, metric))
    return float(d[30] + d[31]) / 2


@pytest.mark.parametrize("dims", [4, C - 1])  # a loose bound, and one nearly tight (so near the threshold)
@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_the_bound_index_finds_every_track_within_the_threshold(metric, dims):
    g, probes = _adversarial(_gallery(3000), metric)
    rng = np.random.default_rng(2)
    sample = g[rng.choice(len(g), 500, replace=False)]
    whole = [(np.arange(len(g)), np.arange(len(g)), np.full(len(g), 30), g)]
    index = BoundIndex.build(metric, sample, lambda: whole, dims, {})
    for q in probes:
        t = _threshold(q, g, metric)
        truth = set(np.flatnonzero(brute(q, g, metric) <= t).tolist())
        (hits,) = index.query(q[None], t, shortlist=3)
        found = set(index.track_ids[hits.within].tolist())
        assert truth <= found, (metric, sorted(truth - found))
        assert len(hits.nearest) == 3
        # the bound is a lower bound: no track's bound exceeds its distance, nor any list's bound its members'
        rows, lists = index.bounds(q)
        d = brute(q, g, metric)[index.track_ids]
        assert (rows <= d * (1 + 1e-6) + 1e-9).all(), float((rows - d).max())
        member_min = np.minimum.reduceat(d, index.starts[:-1][np.diff(index.starts) > 0])
        assert (lists[np.diff(index.starts) > 0] <= member_min * (1 + 1e-6) + 1e-9).all()
        assert hits.rest_bound <= np.sort(d)[-1] + 1e-6


def _store(tmp_path, feats: np.ndarray, metric: str) -> GalleryStore:
    model = ModelInfo("ab" * 32, "m.pt", "gaitbase", metric)
    store = GalleryStore(tmp_path / f"big-{metric}.sqlite", create=True)
    store.add([Enrolment(f"P{i:04d}", "synthetic", [TrackResult(1, 0, 9, 30, 30, {},
                                                                Embedding("s", 1, f, 30, 0, 9))])
               for i, f in enumerate(feats)], model)
    return store


@pytest.mark.parametrize("dims", [3, C - 1])
@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_a_large_gallery_file_gives_every_identity_within_the_threshold(tmp_path, metric, dims):
    g, probes = _adversarial(_gallery(600), metric)
    cfg = SearchConfig(exact_limit=100, shortlist=2, bound_dims=dims, sample=200)
    with _store(tmp_path, g, metric) as store:
        for q in probes:
            t = _threshold(q, g, metric)
            d = brute(q, g, metric)
            want = {f"P{i:04d}" for i in np.flatnonzero(d <= t)}
            probe = Embedding("p", 1, q, 30, 0, 29)
            found, info = store.candidates([probe], cfg, metric, t, min_frames=10)
            names = {i.name for i in found}
            assert info["mode"] == "index" and want <= names, sorted(want - names)
            assert len(found) < len(g)  # it did not just load everything
            dec = Matcher(MatchConfig(metric=metric))([probe], found, threshold=t)[0]
            assert dec.status == "match" and dec.identity == f"P{int(d.argmin()):04d}"
        index_file = tmp_path / f"big-{metric}.sqlite.{metric}.index.npz"
        stamp = index_file.stat().st_mtime_ns
        store.candidates([probe], cfg, metric, t)
        assert index_file.stat().st_mtime_ns == stamp  # kept and reused
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        store.remove("P0000")
        store.candidates([probe], cfg, metric, t)
        assert index_file.stat().st_mtime_ns != stamp  # the gallery changed: rebuilt
        found, info = store.candidates([probe], SearchConfig(exact_limit=10_000), metric, t)
        assert info["mode"] == "exact" and len(found) == len(g) - 1


def test_the_live_lookup_answers_batches_through_the_index(tmp_path):
    g, probes = _adversarial(_gallery(400), "euc")
    cfg = SearchConfig(exact_limit=50, shortlist=1, bound_dims=3, sample=100)
    with _store(tmp_path, g, "euc") as store:
        t = max(_threshold(q, g, "euc") for q in probes[:2])
        find = store.lookup(cfg, "euc", t, 10)
        batch = [Embedding("live", k, q, 30, 0, 29) for k, q in enumerate(probes[:2])]
        names = {i.name for i in find(batch)}
        for q in probes[:2]:
            assert {f"P{i:04d}" for i in np.flatnonzero(brute(q, g, "euc") <= t)} <= names
        assert len(names) < len(g)


def _build(db: str, barrier, out) -> None:
    barrier.wait()
    with GalleryStore(db, readonly=True) as store:
        index = store.search_index(SearchConfig(exact_limit=10, bound_dims=3, sample=100), "euc")
        out.put(len(index))


def test_two_processes_building_one_index_at_once_both_get_a_whole_one(tmp_path):
    with _store(tmp_path, _gallery(300), "euc"):
        pass
    assert at_once(_build, str(tmp_path / "big-euc.sqlite")) == [300, 300]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = BoundIndex.load(tmp_path / "big-euc.sqlite.euc.index.npz")
    assert loaded is not None and len(loaded) == 300 and loaded.stamp["tracks"] == "300"


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_a_track_that_float32_puts_within_the_threshold_is_measured(metric):
    """Near-duplicates of long vectors: OpenGait's float32 formula (|a|^2 + |b|^2 - 2 a.b) loses digits to
    cancellation and can put a track within a threshold that its true distance exceeds. The index must measure it:
    the decision is taken on the float32 distance."""
    from allinone.decide.distance import distance_matrix
    rng = np.random.default_rng(7)
    base = 40 * rng.normal(size=(C, P)).astype(np.float32)
    noise = 0.003 if metric == "euc" else 0.03  # cos: distances about float32's resolution of 1 - u.v
    g = np.concatenate([_gallery(400), (base + noise * rng.normal(size=(200, C, P))).astype(np.float32)])
    q = (base + noise * rng.normal(size=(C, P))).astype(np.float32)
    index = BoundIndex.build(metric, g[::2], lambda: [(np.arange(len(g)), np.arange(len(g)), np.full(len(g), 30), g)],
                             C - 1, {})
    d32 = distance_matrix(q[None], g, metric)[0]
    d64 = brute(q, g, metric)
    below = [j for j in range(400, 600) if d32[j] < d64[j] * (1 - 1e-4) - 1e-9]
    assert len(below) > 10  # the case is real: float32 gives less than the true distance for many of them
    for j in below[:40]:
        (hits,) = index.query(q[None], float(d32[j]), shortlist=0)
        assert j in set(index.track_ids[hits.within].tolist()), (j, d32[j], d64[j])


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_the_bounds_rule_out_most_of_a_clustered_gallery(metric):
    """The cost side: on tracks in well-separated groups, whole lists are skipped and few tracks are measured
    (a bound that ruled out nothing would still be exact, and as slow as brute force)."""
    rng = np.random.default_rng(3)
    centers = 3 * rng.normal(size=(12, C, P))
    g = (centers[rng.integers(0, 12, 3000)] + 0.3 * rng.normal(size=(3000, C, P))).astype(np.float32)
    whole = [(np.arange(len(g)), np.arange(len(g)), np.full(len(g), 30), g)]
    index = BoundIndex.build(metric, g[rng.choice(len(g), 600, replace=False)], lambda: whole, 8, {})
    for target in (0, 1000, 2000):
        q = g[target] + 0.05 * rng.normal(size=(C, P)).astype(np.float32)
        t = _threshold(q, g, metric)
        (hits,) = index.query(q[None], t, shortlist=3)
        truth = set(np.flatnonzero(brute(q, g, metric) <= t).tolist())
        assert truth <= set(index.track_ids[hits.within].tolist())
        assert hits.looked_at < len(g) / 2, hits.looked_at  # lists skipped whole
        assert len(hits.within) < len(g) / 10, len(hits.within)  # and few tracks measured


def test_the_live_lookup_keeps_its_index_and_reloads_it_only_when_the_file_changes(tmp_path, monkeypatch):
    g, probes = _adversarial(_gallery(300), "euc")
    cfg = SearchConfig(exact_limit=50, shortlist=1, bound_dims=3, sample=100)
    with _store(tmp_path, g, "euc"):
        pass
    read = []  # every time an index is read from its file or built
    real_load, real_build = BoundIndex.load.__func__, BoundIndex.build.__func__
    monkeypatch.setattr(BoundIndex, "load", classmethod(lambda cls, *a, **k: read.append("load")
                                                        or real_load(cls, *a, **k)))
    monkeypatch.setattr(BoundIndex, "build", classmethod(lambda cls, *a, **k: read.append("build")
                                                         or real_build(cls, *a, **k)))
    t = _threshold(probes[0], g, "euc")
    with GalleryStore(tmp_path / "big-euc.sqlite", readonly=True) as live:
        find = live.lookup(cfg, "euc", t, 10)
        for k in range(6):  # six decisions of a stream
            find([Embedding("live", k, probes[k % len(probes)], 30, 0, 29)])
        assert read == ["build"]  # built once (no file yet), never read again while the file is unchanged
        with GalleryStore(tmp_path / "big-euc.sqlite") as writer:  # someone enrols beside the stream
            writer.add([Enrolment("New", "synthetic", [TrackResult(1, 0, 9, 30, 30, {},
                                                                  Embedding("s", 1, g[3], 30, 0, 9))])],
                       ModelInfo("ab" * 32, "m.pt", "gaitbase", "euc"))
        for k in range(3):
            found = find([Embedding("live", 10 + k, g[3], 30, 0, 29)])
        assert read == ["build", "load", "build"]  # stale: its file read once (stale too), built again, then kept
        assert "New" in {i.name for i in found}
