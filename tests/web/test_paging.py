"""Paging over 10,000 sightings through the API: every page of the walk under 100 ms (the HTTP call timed
around Starlette's TestClient), deep pages and filtered pages included, and the walk sees each sighting once."""
from __future__ import annotations

import logging
import statistics
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from allinone.watch.sightings import Sighting, Sightings
from allinone.web.app import make_app
from tests.web.conftest import T0

N = 10_000
PAGE_BUDGET_S = 0.100
log = logging.getLogger(__name__)


def _sightings(n: int) -> list[Sighting]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        cam = ("hall", "door", "yard")[i % 3]
        t = T0 + 10 * i
        if i % 4 == 0:
            out.append(Sighting(cam, i, t, t + 5, 0, 50, "match", identity=f"P{i % 40}", distance=0.2,
                                threshold=0.5, n_silhouettes=30, runners_up=((f"P{i % 40}", 0.2),)))
        else:
            out.append(Sighting(cam, i, t, t + 5, 0, 50, "unknown", unknown_id=f"U{1 + i % 500}", distance=0.9,
                                threshold=0.5, reason="no_candidate", n_silhouettes=30,
                                embedding=rng.normal(size=(16, 4)).astype(np.float32)))
    return out


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    out = tmp_path_factory.mktemp("big")
    with Sightings(out / "sightings.db", root=out) as s:
        s.add_many(_sightings(N))
    app = make_app(out / "sightings.db", out, out / "gallery.sqlite", "", None)
    with TestClient(app, base_url="http://127.0.0.1:8090") as c:
        c.get("/api/sightings")  # the first request starts the app's thread pool: not a page's cost
        yield c


def _timed(client, **query) -> tuple[float, dict]:
    t = time.perf_counter()
    r = client.get("/api/sightings", params=query)
    took = time.perf_counter() - t
    assert r.status_code == 200, r.text
    return took, r.json()


def test_walking_every_page_of_10000_sightings(big):
    times, seen, before = [], [], None
    while True:
        took, page = _timed(big, limit=200, **({"before_id": before} if before else {}))
        times.append(took)
        seen += [s["id"] for s in page["sightings"]]
        before = page["next_before_id"]
        if before is None:
            break
    assert seen == list(range(N, 0, -1))
    log.info("10,000 sightings in %d pages of 200: median %.1f ms, slowest %.1f ms", len(times),
             1000 * statistics.median(times), 1000 * max(times))
    assert max(times) < PAGE_BUDGET_S, f"slowest page {max(times) * 1000:.1f} ms"


@pytest.mark.parametrize("query", [
    {"limit": 50, "before_id": 17}, {"limit": 200, "before_id": 5000, "camera": "yard"},
    {"limit": 200, "person": "unknown", "before_id": 9000}, {"limit": 200, "person": "U123"},
    {"limit": 200, "person": "P7"}, {"limit": 200, "status": "match", "since": str(T0 + 50_000)},
    {"limit": 200, "since": str(T0 + 99_000), "until": str(T0 + 99_500)}])
def test_deep_and_filtered_pages_are_fast(big, query):
    took = min(_timed(big, **query)[0] for _ in range(3))  # the best of three: the machine is shared
    log.info("%s: %.1f ms", query, took * 1000)
    assert took < PAGE_BUDGET_S, f"{query}: {took * 1000:.1f} ms"
