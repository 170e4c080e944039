"""The Ray engine of ``extract``: the per-video task on Ray actors sized by each node's own CPUs and GPUs.

- The package reaches every worker through ``runtime_env`` (``working_dir``: a copy of this ``allinone`` folder
  alone, without caches); nodes need the requirements installed, not this repository.
- Paths are resolved by the driver before they are sent; workers hand their sequences back in memory and the driver
  writes the dataset, so the output folder need not be shared with the nodes (the videos and models must be readable
  on them at the same paths).
- Actors per node from ``ray.nodes()``: one per GPU (with ``--device auto`` or ``cuda``), else one per CPU; each is
  pinned to its node (soft affinity, so a replacement goes elsewhere when the node is gone). ``--workers`` caps the
  total, spread over the nodes in turn.
- A worker actor that dies mid-video (killed, its node lost) is replaced on the same node and its video tried again
  (``ATTEMPTS`` in all), then recorded as failed; the batch goes on.
- Without ``--ray-address``, or with a loopback one, Ray is kept on the loopback: Ray rewrites 127.0.0.1 to the
  machine's outside address unless its single-machine mode is on (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set here
  before Ray is imported), and in that mode every Ray process binds to 127.0.0.1 only.

Plain actors with a small scheduler, not ``ray.data.map_batches`` with a callable class: a video is one item of
seconds to hours, not a row of a uniform table; Ray Data sizes its actor pool from cluster totals and hides which
actor ran an item, while here each node's actors are sized from that node, a lost actor's video is retried by name
with its attempt recorded, and the node that made each sequence goes into the manifest.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allinone.datasets.worker import ATTEMPTS, ExtractWorker, failed
from allinone.errors import UserError, first_line

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _is_loopback(address: str | None) -> bool:
    if not address:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in LOOPBACK


def runtime_env(ship: Path) -> dict:
    """The package for the workers: a copy of this allinone folder alone (no caches) in ``ship``, Ray's
    ``working_dir``, uploaded by ``ray.init`` and cached by content. A working_dir also keeps Ray from giving the
    workers the driver's script folder and working folder as import paths, which would import a checkout there
    instead of the shipped package (and nothing at all on a node without one)."""
    pkg = Path(__file__).resolve().parents[1]
    shutil.copytree(pkg, ship / "allinone", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return {"working_dir": str(ship), "env_vars": {"OMP_NUM_THREADS": "1"}}


def plan_actors(nodes: list[dict], device: str, cap: int | None) -> list[dict]:
    """One entry per actor: node id, CPUs and GPUs it takes, the device it uses; sized by each node's resources."""
    per_node = []
    for n in nodes:
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        cpus, gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
        if gpus and device != "cpu":
            slots = [{"node": n["NodeID"], "num_cpus": 1 if cpus >= gpus else 0, "num_gpus": 1,
                      "device": "cuda"}] * gpus
        else:
            slots = [{"node": n["NodeID"], "num_cpus": 1, "num_gpus": 0, "device": "cpu"}] * cpus
        per_node.append(slots)
    plan = []
    while any(per_node) and (cap is None or len(plan) < cap):
        for slots in per_node:  # round robin, so a cap spreads over the nodes
            if slots and (cap is None or len(plan) < cap):
                plan.append(slots.pop(0))
    return plan


def run_ray(todo: list[tuple[str, str]], worker_args: tuple, workers: int | None, address: str | None,
            device: str):
    """The same per-video task on Ray actors, results streamed as they finish. ``worker_args``: the arguments of
    ExtractWorker after the device (config, min_frames, cut44)."""
    ray, affinity = import_ray(address)
    started = init_ray(ray, address, workers)
    pool = _ActorPool(ray, _worker_class(ray), affinity, worker_args)
    try:
        plan = plan_actors(ray.nodes(), device, workers)
        if not plan:
            raise UserError(f"the Ray cluster {address or '(local)'} has no CPU or GPU for a worker")
        per = {}
        for s in plan:
            per[s["node"][:12]] = per.get(s["node"][:12], 0) + 1
        log.info("Ray: %d actor(s) on %d node(s): %s", len(plan), len(per),
                 ", ".join(f"{k}: {n}" for k, n in per.items()))
        for slot in plan:
            pool.add(slot)
        yield from _schedule(ray, pool, todo)
    finally:
        pool.kill_all()
        if started:
            ray.shutdown()


def import_ray(address: str | None):
    """The ray module and its node-affinity strategy, imported in single-machine mode for a loopback address."""
    if _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise UserError("--engine ray needs the ray package (pip install ray)") from None
    return ray, NodeAffinitySchedulingStrategy


def init_ray(ray, address: str | None, workers: int | None) -> bool:
    """Connect to the cluster at ``address`` (or start a local one) unless Ray is already initialised; True when
    this call did, so the caller shuts it down."""
    if ray.is_initialized():
        return False
    local = {} if address else {"num_cpus": workers or os.cpu_count() or 1, "include_dashboard": False,
                                "_node_ip_address": "127.0.0.1"}
    with tempfile.TemporaryDirectory(prefix="allinone-ray-") as ship:
        try:
            ray.init(address=address or None, runtime_env=runtime_env(Path(ship)), log_to_driver=False,
                     logging_level=logging.WARNING, **local)
        except Exception as exc:
            raise UserError(f"cannot reach the Ray cluster {address or '(local)'} ({first_line(exc)})") \
                from None
    return True


def _worker_class(ray):
    """ExtractWorker as a Ray actor class that knows its node and where its package came from."""
    @ray.remote(max_restarts=0)
    class RayExtractWorker(ExtractWorker):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.node = ray.get_runtime_context().get_node_id()

        def __call__(self, path: str, vid: str) -> dict:
            import allinone  # where this worker's package came from (runtime_env's copy, not a checkout)
            return {**super().__call__(path, vid), "package": str(Path(allinone.__file__).parent)}

    return RayExtractWorker


@dataclass
class _ActorPool:
    """The worker actors: every one made (all killed at the end) and the idle ones, each with its plan slot."""
    ray: Any
    cls: Any
    affinity: Any  # NodeAffinitySchedulingStrategy
    worker_args: tuple
    actors: list = field(default_factory=list)
    free: deque = field(default_factory=deque)

    def add(self, slot: dict) -> None:
        """A new idle actor for ``slot``, on the slot's node while that node lives."""
        a = self.cls.options(
            num_cpus=slot["num_cpus"], num_gpus=slot["num_gpus"],
            scheduling_strategy=self.affinity(slot["node"], soft=True),
        ).remote(self.worker_args[0], slot["device"], *self.worker_args[1:])
        self.actors.append(a)
        self.free.append((a, slot))

    def kill(self, a) -> None:
        try:
            self.ray.kill(a, no_restart=True)
        except Exception:  # already gone
            pass

    def kill_all(self) -> None:
        for a in self.actors:
            self.kill(a)


def _schedule(ray, pool: _ActorPool, todo: list[tuple[str, str]]):
    """Each video to an idle actor, the results yielded as they finish. A video whose actor died goes back to the
    front of the queue for a fresh actor on the same node, up to ATTEMPTS tries; a Ray error fails it at once."""
    pending = deque((path, vid, 1) for path, vid in todo)
    inflight: dict = {}
    while pending or inflight:
        while pending and pool.free:
            (a, slot), (path, vid, n) = pool.free.popleft(), pending.popleft()
            inflight[a.__call__.remote(path, vid)] = (a, slot, path, vid, n)
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for ref in ready:
            a, slot, path, vid, n = inflight.pop(ref)
            try:
                rec = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                log.warning("%s: its Ray worker on node %s died (%s); a new worker takes over", path,
                            slot["node"][:12], first_line(exc))
                pool.kill(a)
                pool.add(slot)
                if n < ATTEMPTS:
                    pending.appendleft((path, vid, n + 1))
                else:
                    yield failed(path, vid, f"its Ray worker died while extracting it ({n} attempts)", n)
                continue
            except ray.exceptions.RayError as exc:
                pool.free.append((a, slot))
                yield failed(path, vid, f"Ray: {first_line(exc)}", n)
                continue
            pool.free.append((a, slot))
            rec["attempts"] = n
            yield rec
