"""extract on a real two-node Ray cluster on the loopback, with token authentication: the driver run from another
folder with relative paths, the package shipped by runtime_env, actors sized by each node's own CPUs, the node of
every sequence in the manifest, a worker actor SIGKILLed mid-batch replaced and its video retried, and no Ray
process listening anywhere but on 127.0.0.1.

Ray 2.60 rewrites a loopback --node-ip-address (and a loopback --address) to the machine's outside address
(``ray._private.services.resolve_ip_for_localhost``) unless its single-machine mode is on, and refuses to start a
worker node in that mode; the nodes are therefore started through a three-line launcher that turns the rewrite off,
so that both nodes really are 127.0.0.1 and bind only there. One slow test on purpose (a cluster start is ~20 s)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.test_cli import REPO

LAUNCH = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host;"
          "from ray.scripts.scripts import main; sys.argv = ['ray', *sys.argv[1:]]; main()")
NODES = ("import json, ray; ray.init(address='{addr}', log_to_driver=False);"
         "print(json.dumps([[n['NodeID'], n['NodeManagerAddress'], n['NodeManagerPort'], n['Resources'].get('CPU')]"
         " for n in ray.nodes() if n['Alive']]))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_procs(tags: list[str]) -> list[psutil.Process]:
    out = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(t in " ".join(p.info["cmdline"] or []) for t in tags):
                out.add(p)
                out.update(p.children(recursive=True))
        except psutil.Error:
            pass
    return list(out)


def _listening(procs: list[psutil.Process]) -> set[tuple[str, int]]:
    found = set()
    for p in procs:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


def _loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_extract_on_a_two_node_loopback_cluster_with_token_auth(shared, tmp_path):
    base = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    tags = [str(base / "h"), str(base / "w")]

    def start(args: list[str], extra: dict | None = None) -> None:
        with open(base / "ray.log", "a") as log:
            r = subprocess.run([sys.executable, "-c", LAUNCH, "start", *args, "--disable-usage-stats"],
                               env={**env, **(extra or {})}, cwd=base, stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL, timeout=180)
        if r.returncode:
            pytest.fail(f"ray start {' '.join(args)} failed:\n{(base / 'ray.log').read_text()[-3000:]}")

    work = tmp_path / "elsewhere"  # the driver's folder: no repository here, all paths relative
    try:
        start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
               "--temp-dir", tags[0], "--include-dashboard=false"], {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        start(["--address", addr, "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--temp-dir", tags[1]])
        probe = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # a driver on the loopback (as extract does)
        got = subprocess.run([sys.executable, "-c", NODES.format(addr=addr)], env=probe, cwd=base,
                             capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr[-3000:]
        nodes = json.loads(got.stdout.strip().splitlines()[-1])
        assert len(nodes) == 2 and all(ip == "127.0.0.1" for _, ip, _, _ in nodes), nodes  # both joined
        cpus = {nid: c for nid, _, _, c in nodes}
        # token authentication is on: a driver with another token is refused
        bad = subprocess.run([sys.executable, "-c", NODES.format(addr=addr)], env={**probe, "RAY_AUTH_TOKEN": "x" * 64},
                             cwd=base, capture_output=True, text=True, timeout=180)
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
        killed, listening, t = None, set(), time.time()
        while killed is None and time.time() - t < 300:
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            procs = _cluster_procs(tags) + [psutil.Process(driver.pid)]
            listening |= _listening(procs)
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
        listening |= _listening(_cluster_procs(tags))
        outside = {a for a in listening if not _loopback(a[0])}
        assert listening and not outside, f"Ray listens outside the loopback: {sorted(outside)}"

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
    finally:
        for p in _cluster_procs(tags):
            try:
                p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(base, ignore_errors=True)


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
