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
from pathlib import Path

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
    if _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise UserError("--engine ray needs the ray package (pip install ray)") from None
    started = False
    if not ray.is_initialized():
        local = {} if address else {"num_cpus": workers or os.cpu_count() or 1, "include_dashboard": False,
                                    "_node_ip_address": "127.0.0.1"}
        with tempfile.TemporaryDirectory(prefix="allinone-ray-") as ship:
            try:
                ray.init(address=address or None, runtime_env=runtime_env(Path(ship)), log_to_driver=False,
                         logging_level=logging.WARNING, **local)
            except Exception as exc:
                raise UserError(f"cannot reach the Ray cluster {address or '(local)'} ({first_line(exc)})") \
                    from None
        started = True

    @ray.remote(max_restarts=0)
    class RayExtractWorker(ExtractWorker):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.node = ray.get_runtime_context().get_node_id()

        def __call__(self, path: str, vid: str) -> dict:
            import allinone  # where this worker's package came from (runtime_env's copy, not a checkout)
            return {**super().__call__(path, vid), "package": str(Path(allinone.__file__).parent)}

    def make(slot: dict):
        return RayExtractWorker.options(
            num_cpus=slot["num_cpus"], num_gpus=slot["num_gpus"],
            scheduling_strategy=NodeAffinitySchedulingStrategy(slot["node"], soft=True),
        ).remote(worker_args[0], slot["device"], *worker_args[1:])

    actors: list = []
    try:
        plan = plan_actors(ray.nodes(), device, workers)
        if not plan:
            raise UserError(f"the Ray cluster {address or '(local)'} has no CPU or GPU for a worker")
        per = {}
        for s in plan:
            per[s["node"][:12]] = per.get(s["node"][:12], 0) + 1
        log.info("Ray: %d actor(s) on %d node(s): %s", len(plan), len(per),
                 ", ".join(f"{k}: {n}" for k, n in per.items()))
        free = deque()
        for slot in plan:
            a = make(slot)
            actors.append(a)
            free.append((a, slot))
        pending = deque((path, vid, 1) for path, vid in todo)
        inflight: dict = {}
        while pending or inflight:
            while pending and free:
                (a, slot), (path, vid, n) = free.popleft(), pending.popleft()
                inflight[a.__call__.remote(path, vid)] = (a, slot, path, vid, n)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                a, slot, path, vid, n = inflight.pop(ref)
                try:
                    rec = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                    log.warning("%s: its Ray worker on node %s died (%s); a new worker takes over", path,
                                slot["node"][:12], first_line(exc))
                    try:
                        ray.kill(a, no_restart=True)
                    except Exception:  # already gone
                        pass
                    b = make(slot)
                    actors.append(b)
                    free.append((b, slot))
                    if n < ATTEMPTS:
                        pending.appendleft((path, vid, n + 1))
                    else:
                        yield failed(path, vid, f"its Ray worker died while extracting it ({n} attempts)", n)
                    continue
                except ray.exceptions.RayError as exc:
                    free.append((a, slot))
                    yield failed(path, vid, f"Ray: {first_line(exc)}", n)
                    continue
                free.append((a, slot))
                rec["attempts"] = n
                yield rec
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        if started:
            ray.shutdown()

