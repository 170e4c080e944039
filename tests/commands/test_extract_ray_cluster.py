"""extract on a real two-node Ray cluster on the loopback, with token authentication (tests/ray_cluster.py): the
driver run from another folder with relative paths, the package shipped by runtime_env, actors sized by each node's
own CPUs, the node of every sequence in the manifest, a worker actor SIGKILLed mid-batch replaced and its video
retried, and no Ray process listening anywhere but on 127.0.0.1. One slow test on purpose (a cluster start is
~20 s)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq

from tests.ray_cluster import cluster_procs, listening, loopback, two_node_cluster
from tests.test_cli import REPO


def test_extract_on_a_two_node_loopback_cluster_with_token_auth(shared, tmp_path):
    work = tmp_path / "elsewhere"  # the driver's folder: no repository here, all paths relative
    with two_node_cluster(head_cpus=1, worker_cpus=2) as cluster:
        addr, env, tags = cluster.addr, cluster.env, cluster.tags
        cpus = {nid: c for nid, _, _, c in cluster.nodes}
        # token authentication is on: a driver with another token is refused
        bad = cluster.ask_nodes({**cluster.probe_env, "RAY_AUTH_TOKEN": "x" * 64})
        assert bad.returncode != 0 and "Authentication" in bad.stderr, bad.stderr[-2000:]

        (work / "clips").mkdir(parents=True)
        v = shared / "fixtures/videos"
        names = ["demo1.mp4", "demo2.mp4", "demo4.mp4", "demo5.mp4"]
        for n in names:
            shutil.copy(v / n, work / "clips" / n)
        (work / "videos.txt").write_text("".join(f"clips/{n}\n" for n in names))
        rel = lambda p: os.path.relpath(p, work)  # noqa: E731
        driver = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "extract", "--list", "videos.txt", "--out", "ds",
             "--engine", "ray", "--ray-address", addr, "--detector", rel(shared / "weights/yolox_nano.onnx"),
             "--seg-model", rel(shared / "weights/pphumanseg_onnx_model.onnx")],
            env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # a worker actor busy with a video is SIGKILLed mid-batch
        killed, heard, t = None, set(), time.time()
        while killed is None and time.time() - t < 300:
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            procs = cluster_procs(tags) + [psutil.Process(driver.pid)]
            heard |= listening(procs)
            for p in procs:
                try:
                    if " ".join(p.cmdline()).startswith("ray::RayExtractWorker.__call__"):
                        time.sleep(2)  # well into its video
                        os.kill(p.pid, signal.SIGKILL)
                        killed = p.pid
                        break
                except psutil.Error:
                    pass
            time.sleep(0.2)
        assert killed, "no busy worker actor seen"
        out, err = driver.communicate(timeout=900)
        assert driver.returncode == 0, err[-4000:]
        heard |= listening(cluster_procs(tags))
        outside = {a for a in heard if not loopback(a[0])}
        assert heard and not outside, f"Ray listens outside the loopback: {sorted(outside)}"

        ds = work / "ds"
        recs = [json.loads(x) for x in (ds / "videos.jsonl").read_text().splitlines()]
        assert sorted(r["video"] for r in recs) == sorted(str((work / "clips" / n).resolve()) for n in names)
        assert all(r["status"] == "done" for r in recs), recs
        # the workers imported the package runtime_env shipped, not this checkout (which Ray's copy of the driver's
        # sys.path would also reach on this one machine)
        assert all("runtime_resources" in r["package"] and str(REPO) not in r["package"] for r in recs), recs
        retried = [r for r in recs if r["attempts"] == 2]
        assert len(retried) == 1 and retried[0]["worker_pid"] != killed  # its video done by the replacement
        assert "died" in err and "a new worker takes over" in err
        rows = pq.read_table(ds / "manifest.parquet").to_pylist()
        assert {r["node"] for r in rows} == set(cpus)  # both nodes made sequences, each named by its id
        disk = sorted(p.name for p in ds.iterdir() if p.is_dir() and not p.name.startswith("."))
        assert disk == sorted(r["sequence"] for r in rows)
        # each node's own CPUs sized its actors: 1 on the head, 2 on the other (the driver's machine has its own
        # count, which is not 3)
        plan = next(x for x in err.splitlines() if "actor(s) on 2 node(s)" in x)
        assert "3 actor(s)" in plan and all(f"{nid[:12]}: {int(c)}" in plan for nid, c in cpus.items()), plan


def test_actors_are_sized_by_each_nodes_own_resources():
    """No Ray needed: the plan from ray.nodes()-shaped records (a GPU node, a CPU node, a dead node)."""
    from allinone.datasets.ray_engine import plan_actors
    nodes = [{"NodeID": "g" * 40, "Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
             {"NodeID": "c" * 40, "Alive": True, "Resources": {"CPU": 3.0}},
             {"NodeID": "d" * 40, "Alive": False, "Resources": {"CPU": 64.0}}]
    plan = plan_actors(nodes, "auto", None)
    assert [(s["node"][0], s["device"], s["num_gpus"]) for s in plan] == [
        ("g", "cuda", 1), ("c", "cpu", 0), ("g", "cuda", 1), ("c", "cpu", 0), ("c", "cpu", 0)]
    assert len(plan_actors(nodes, "cpu", None)) == 19  # --device cpu: every CPU of both live nodes
    assert [s["node"][0] for s in plan_actors(nodes, "auto", 3)] == ["g", "c", "g"]  # a cap spreads over nodes
