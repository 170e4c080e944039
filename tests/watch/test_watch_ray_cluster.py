"""watch --engine ray on a real two-node Ray cluster on the loopback with token authentication (tests/ray_cluster.py):
two cameras (ffmpeg HTTP MPEG-TS streams that serve one client each, so only the node reads them), one enrolled
person; each camera's actor on its own node (the node ids in the session's run.json), sightings from both cameras in
the head's database, and no actor left once the service has stopped. One slow test on purpose (a cluster start is
~20 s, the service runs 40 s)."""
from __future__ import annotations

import json
import time

import psutil

from allinone.watch.sightings import Sightings
from tests.commands.test_live import _models, _need
from tests.helpers import looped_ts_server
from tests.ray_cluster import cluster_procs, free_port, two_node_cluster
from tests.test_cli import REPO
from tests.watch.test_watch import enrol_ann


def _actors(tags: list[str]) -> list[str]:
    out = []
    for p in cluster_procs(tags):
        try:
            if "RayCameraWorker" in " ".join(p.cmdline()):
                out.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return out


def test_watch_places_cameras_on_both_nodes_and_stores_their_sightings(tmp_path, shared, random_gaitbase):
    import subprocess
    import sys
    _need("ffmpeg")
    db = enrol_ann(tmp_path, shared, random_gaitbase)
    video = shared / "fixtures/videos/demo4.mp4"
    out = tmp_path / "out"
    with two_node_cluster(head_cpus=1, worker_cpus=2) as cluster, \
            looped_ts_server(video, loops=12) as hall, looped_ts_server(video, loops=12) as corridor:
        cfg = tmp_path / "watch.yaml"
        cfg.write_text(f"gallery: {db}\noutput: {out}\nthreshold: 1.0e9\nlisten: 127.0.0.1:{free_port()}\n"
                       f"cameras:\n  - {{name: hall, source: '{hall}'}}\n  - {{name: corridor, source: '{corridor}'}}\n")
        # decisions from 5 silhouettes, as test_watch.py: this machine analyses ~4 frames/s a camera
        run = subprocess.run([sys.executable, str(REPO / "main.py"), "watch", str(cfg), "--engine", "ray",
                              "--address", cluster.addr, "--duration", "40", "--window-min", "5", "--min-frames", "5",
                              *_models(shared, random_gaitbase)],
                             env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-4000:]
        end = time.monotonic() + 30  # the actors are killed as the service stops
        while _actors(cluster.tags) and time.monotonic() < end:
            time.sleep(0.5)
        assert not _actors(cluster.tags), _actors(cluster.tags)
        nodes = {nid for nid, _, _, _ in cluster.nodes}
        tags = cluster.tags
    assert not cluster_procs(tags)  # the cluster is gone with its workers
    session = json.loads(next((out / "sessions").glob("*/run.json")).read_text())
    live = session["live"]
    assert {name: s["engine"] for name, s in live.items()} == {"hall": "ray", "corridor": "ray"}
    assert {s["node"] for s in live.values()} == nodes, live  # a camera on each node
    assert all(s["frames"] > 0 and s["shipped"]["frames"] > 0 for s in live.values()), live
    with Sightings(out / "sightings.db", root=out) as store:
        rows = [store.get(s.id) for s in store.page(limit=1000)]
    assert {r.camera for r in rows} == {"hall", "corridor"}, (  # written by the head, from both nodes' cameras
        [(m["probe"], m["status"]) for m in session["matches"]], live)
    assert all(r.crop and (out / r.crop).is_file() and r.embedding is not None for r in rows)
