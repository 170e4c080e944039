"""A real Ray cluster of two nodes on the loopback, with token authentication, for the cluster tests (extract's and
watch's).

Ray 2.60 rewrites a loopback --node-ip-address (and a loopback --address) to the machine's outside address
(``ray._private.services.resolve_ip_for_localhost``) unless its single-machine mode is on, and refuses to start a
worker node in that mode; the nodes are therefore started through a three-line launcher that turns the rewrite off,
so that both nodes really are 127.0.0.1 and bind only there. A cluster start is ~20 s."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

LAUNCH = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host;"
          "from ray.scripts.scripts import main; sys.argv = ['ray', *sys.argv[1:]]; main()")
NODES = ("import json, ray; ray.init(address='{addr}', log_to_driver=False);"
         "print(json.dumps([[n['NodeID'], n['NodeManagerAddress'], n['NodeManagerPort'], n['Resources'].get('CPU')]"
         " for n in ray.nodes() if n['Alive']]))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_procs(tags: list[str]) -> list[psutil.Process]:
    """Every process of the cluster (its command line names one of the nodes' temp dirs) and their children."""
    out = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(t in " ".join(p.info["cmdline"] or []) for t in tags):
                out.add(p)
                out.update(p.children(recursive=True))
        except psutil.Error:
            pass
    return list(out)


def listening(procs: list[psutil.Process]) -> set[tuple[str, int]]:
    found = set()
    for p in procs:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


def loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@dataclass
class Cluster:
    """A started cluster: its address, the env a driver needs (the token), its nodes ([id, ip, port, CPUs]) and the
    tags that find its processes."""

    addr: str
    env: dict
    base: Path
    tags: list[str]
    nodes: list = field(default_factory=list)

    @property
    def probe_env(self) -> dict:
        """A driver's env on the loopback (as the engines set it before importing Ray)."""
        return {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def ask_nodes(self, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", NODES.format(addr=self.addr)], env=env or self.probe_env,
                              cwd=self.base, capture_output=True, text=True, timeout=180)


@contextlib.contextmanager
def two_node_cluster(head_cpus: int = 1, worker_cpus: int = 2):
    """A head and a worker node on 127.0.0.1 with token authentication; every process of it killed at the end."""
    base = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    port = free_port()
    addr = f"127.0.0.1:{port}"
    tags = [str(base / "h"), str(base / "w")]

    def start(args: list[str], extra: dict | None = None) -> None:
        with open(base / "ray.log", "a") as log:
            r = subprocess.run([sys.executable, "-c", LAUNCH, "start", *args, "--disable-usage-stats"],
                               env={**env, **(extra or {})}, cwd=base, stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL, timeout=180)
        if r.returncode:
            pytest.fail(f"ray start {' '.join(args)} failed:\n{(base / 'ray.log').read_text()[-3000:]}")

    cluster = Cluster(addr, env, base, tags)
    try:
        start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", str(head_cpus),
               "--temp-dir", tags[0], "--include-dashboard=false"], {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        start(["--address", addr, "--node-ip-address", "127.0.0.1", "--num-cpus", str(worker_cpus), "--temp-dir",
               tags[1]])
        got = cluster.ask_nodes()
        assert got.returncode == 0, got.stderr[-3000:]
        cluster.nodes = json.loads(got.stdout.strip().splitlines()[-1])
        assert len(cluster.nodes) == 2 and all(ip == "127.0.0.1" for _, ip, _, _ in cluster.nodes), cluster.nodes
        yield cluster
    finally:
        for p in cluster_procs(tags):
            try:
                p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(base, ignore_errors=True)
