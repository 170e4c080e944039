"""``watch --engine ray``: each camera's producer (decode, detect, track, silhouettes, embeddings) in a Ray actor on a
cluster node; the consumers (decisions, events, sinks, drawing, segments, track files, sightings) stay in the head's
watch loop, as with the local engine.

- One actor per camera, not per node: a camera is one stream and one tracker, so an actor per camera keeps each
  camera's frames in order without a scheduler of its own, a camera that fails ends alone, and Ray places the
  actors. They are pinned to the nodes in turn over each node's CPU (or GPU) slots, as extract's are
  (datasets/ray_engine.py plan_actors; soft affinity), each taking one slot while there are enough of them.
- The actor opens the stream itself (the head never does: a camera may serve one client only), so the cameras'
  addresses and the model files must be reachable from the nodes at the same URLs and paths; the package travels
  by runtime_env as extract's does. The output folder is the head's alone. A stream that does not answer its node
  at the start is asked again while the others run (PendingCamera), as with the local engine.
- Each frame's hand-off (stages/live_handoff.py CameraStep) waits in the actor's outbox of ``OUTBOX`` steps, its
  frame JPEG-encoded (the result video and the sightings' clips are drawn on it in the head). The head pulls each
  camera's outbox in a thread and keeps at most ``QUEUE`` steps: a head that falls behind leaves the outbox full, the
  actor's producer waits, and the stream's own reader drops the oldest frames as it does locally (counted).
- At the end (duration, Ctrl-C, SIGTERM) every actor is asked for what it still holds: the steps made and every open
  track ended, so the head closes them with their final decisions; then the actors are killed (and a Ray started
  here shut down)."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from allinone.errors import UserError, first_line
from allinone.stages.live_handoff import CameraEnd, CameraStep
from allinone.stages.stream_pass import LiveCamera

log = logging.getLogger(__name__)

OUTBOX = 4  # steps an actor holds for the head; then its producer waits and the stream's reader drops frames
QUEUE = 4  # steps the head holds per camera before it stops pulling
PULL_WAIT_S = 0.5
FINISH_S = 120.0  # an actor's last answer (its open tracks' final features) is awaited this long


class CameraWorker:
    """In a node's actor: the camera's stream opened here and turned by ``prepare``, the models built once, the
    producer run in a thread on the stream's frames; its hand-offs wait in ``out`` for the head's ``pull``."""

    def __init__(self, spec: str, name: str, config, device: str, reconnect_s: float, prepare=None,
                 ignore=None) -> None:
        from allinone.stages.build import build_stages
        self.spec, self.name, self.reconnect_s, self.prepare, self.ignore = spec, name, reconnect_s, prepare, ignore
        self.stages, self.config = build_stages(config, device)
        self.src = self.producer = None
        self.timings: dict[str, float] = defaultdict(float)
        self.out: deque = deque()
        self.cond = threading.Condition()
        self.ended, self.error = False, None
        self.jpeg_bytes, self.shipped = 0, 0
        self._stop = threading.Event()
        self._feed = self._thread = None
        self.node = socket.gethostname()

    def open(self) -> dict:
        """Open the camera's stream here (turned by ``prepare``) and build its producer: ``describe()``, or
        {"answered": False, "error": why} when it does not answer (the head tries again later)."""
        from allinone.io.video import open_stream
        from allinone.stages.live_producer import CameraProducer
        try:
            src = open_stream(self.spec, self.reconnect_s)
        except UserError as exc:
            return {"answered": False, "error": str(exc)}
        if self.prepare is not None:
            self.prepare(self.name, src)
        self.src = src
        self.producer = CameraProducer(src.fps, (src.height, src.width), self.name, self.config, self.stages,
                                       self.timings, self.ignore)
        return self.describe()

    def describe(self) -> dict:
        src = self.src
        return {"answered": True, "fps": src.fps, "width": src.width, "height": src.height,
                "stride": self.producer.stride, "node": self.node, "pid": os.getpid()}

    def start(self) -> None:
        wake = threading.Event()
        self._feed = self.src.feed(wake)
        self._thread = threading.Thread(target=self._run, args=(wake,), name="producer", daemon=True)
        self._thread.start()

    def _run(self, wake: threading.Event) -> None:
        feed = self._feed
        try:
            while not self._stop.is_set() and not feed.ended:
                wake.clear()
                item = feed.take()
                if item is None:
                    wake.wait(0.1)
                    continue
                step = self.producer(*item)
                t0 = time.perf_counter()
                step = step.shipped()
                self.timings["jpeg_encode"] += time.perf_counter() - t0
                self.jpeg_bytes += len(step.jpeg)
                self.shipped += 1
                with self.cond:
                    while len(self.out) >= OUTBOX and not self._stop.is_set():
                        self.cond.wait(0.1)  # the head is behind: wait (the stream's reader drops frames)
                    self.out.append(step)
                    self.cond.notify_all()
        except Exception as exc:  # the head logs it and ends this camera
            self.error = f"{type(exc).__name__}: {first_line(exc)}"
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def _source(self) -> dict:
        src = self.src
        if src is None:  # never opened
            return {"count": 0, "dropped": 0, "skipped": 0, "reconnects": 0, "state": "ended", "jpeg_bytes": 0,
                    "shipped": 0}
        return {"count": src.count, "dropped": src.dropped, "skipped": src.skipped, "reconnects": src.reconnects,
                "state": src.state, "jpeg_bytes": self.jpeg_bytes, "shipped": self.shipped}

    def pull(self, wait_s: float) -> dict:
        """The steps made since the last pull (waiting up to ``wait_s`` for one), whether the stream has ended."""
        with self.cond:
            if not self.out and not self.ended:
                self.cond.wait(wait_s)
            steps = list(self.out)
            self.out.clear()
            self.cond.notify_all()
            return {"steps": steps, "ended": self.ended, "error": self.error, "source": self._source()}

    def finish(self) -> dict:
        """Stop: the producer's current frame finished, the stream let go, the steps still held and every open
        track ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._feed is not None:
            self._feed.close()
        with self.cond:
            steps = list(self.out)
            self.out.clear()
        end = self.producer.finish() if self.producer is not None else CameraEnd((), {})
        return {"steps": steps, "end": end, "error": self.error, "source": self._source()}


class RemoteSource:
    """A camera's stream as the head sees it: opened on a node; its size and rate from there, its counters (frames
    read, dropped, skipped, reconnects, state) as last pulled."""

    def __init__(self, spec: str, actor, about: dict) -> None:
        self.spec, self.path, self.actor = spec, spec, actor
        self.fps, self.width, self.height = about["fps"], about["width"], about["height"]
        self.node = about["node"]
        self.count = self.dropped = self.skipped = self.reconnects = 0
        self.jpeg_bytes = self.shipped = 0
        self.state = "live"
        self.last: RemoteFeed | None = None

    def update(self, source: dict) -> None:
        for k in ("count", "dropped", "skipped", "reconnects", "state", "jpeg_bytes", "shipped"):
            setattr(self, k, source[k])

    def feed(self, wake: threading.Event) -> "RemoteFeed":
        self.last = RemoteFeed(self, wake)
        return self.last


class RemoteFeed:
    """A remote camera's steps, pulled from its actor in a thread, for the head's loop (as StreamFeed's frames):
    ``take`` → (CameraStep,) or None at once. ``close`` stops the actor and keeps what it still held (``rest``,
    ``end``) for the camera's close."""

    def __init__(self, src: RemoteSource, wake: threading.Event) -> None:
        import ray
        self.ray, self.src, self.wake = ray, src, wake
        self.q: deque = deque()
        self.ended = False
        self.rest: list[CameraStep] = []
        self.end: CameraEnd | None = None
        self._done = False
        self._stop, self._room = threading.Event(), threading.Event()
        ray.get(src.actor.start.remote())
        self._thread = threading.Thread(target=self._pull, name=f"pull-{src.spec}", daemon=True)
        self._thread.start()

    def _pull(self) -> None:
        ray, src = self.ray, self.src
        try:
            while not self._stop.is_set():
                if len(self.q) >= QUEUE:  # the loop is behind: leave the steps in the actor's outbox
                    self._room.wait(0.1)
                    self._room.clear()
                    continue
                r = ray.get(src.actor.pull.remote(PULL_WAIT_S))
                src.update(r["source"])
                self.q.extend(r["steps"])
                if r["steps"]:
                    self.wake.set()
                if r["error"]:
                    log.warning("%s: its Ray actor stopped: %s", src.spec, r["error"])
                if r["ended"]:
                    break
        except ray.exceptions.RayError as exc:
            log.warning("%s: its Ray actor on node %s is gone (%s); the camera ends", src.spec, src.node[:12],
                        first_line(exc))
            src.state = "ended"
        finally:
            self._done = True
            self.wake.set()

    def take(self):
        if self.q:
            self._room.set()
            return (self.q.popleft(),)
        if self._done and not self.q:
            self.ended = True
        return None

    def close(self) -> None:
        ray, src = self.ray, self.src
        self._stop.set()
        self._thread.join(PULL_WAIT_S + 30)
        self.rest = list(self.q)
        self.q.clear()
        try:
            r = ray.get(src.actor.finish.remote(), timeout=FINISH_S)
        except (ray.exceptions.RayError, TimeoutError) as exc:  # its open tracks are lost with it
            log.warning("%s: no last answer from its Ray actor (%s)", src.spec, first_line(exc))
            return
        src.update(r["source"])
        self.rest += r["steps"]
        self.end = r["end"]


class RemoteCamera(LiveCamera):
    """A LiveCamera whose producer runs in a node's actor: it consumes the steps its feed pulls."""

    def step(self, h: CameraStep) -> None:
        t0 = time.perf_counter()
        frame = h.image()
        self.tm["jpeg_decode"] += time.perf_counter() - t0
        # Ray hands arrays over read-only (zero copy); the matcher's torch wants them writable
        self.consume(replace(h, frame=frame, jpeg=None, new=tuple(_writable(e) for e in h.new),
                             ended=tuple(_writable(e) for e in h.ended)))

    def finish(self, end: CameraEnd) -> None:
        super().finish(replace(end, ended=tuple(_writable(e) for e in end.ended)))

    def _end(self) -> CameraEnd:
        feed = self.src.last
        if feed is None:
            return CameraEnd((), {})
        for h in feed.rest:
            self.step(h)
        return feed.end or CameraEnd((), {})

    def _camera_result(self, entries: list[dict]):
        out = super()._camera_result(entries)
        src = self.src
        # where it ran, and what shipping its frames cost (JPEG bytes per frame; encode time on the node, decode
        # time here, both over the frames shipped)
        n = max(src.shipped, 1)
        out.stats.update({"engine": "ray", "node": src.node,
                          "shipped": {"frames": src.shipped, "jpeg_kb_per_frame": round(src.jpeg_bytes / n / 1024, 1),
                                      "encode_ms_per_frame": round(1000 * self.tm.get("jpeg_encode", 0.0) / n, 2),
                                      "decode_ms_per_frame": round(1000 * self.tm.get("jpeg_decode", 0.0) / n, 2)}})
        return out


def _writable(x):
    """An Embedding or EndedTrack with its feature copied out of Ray's read-only buffer."""
    return x if x.feature is None or x.feature.flags.writeable else replace(x, feature=np.array(x.feature))


def _absolute(config):
    """Model paths made absolute: an actor's working folder is Ray's copy of the package, not the driver's."""
    def a(p):
        return str(Path(p).expanduser().resolve()) if p else p
    return replace(config, detect=replace(config.detect, model=a(config.detect.model)),
                   segment=replace(config.segment, model=a(config.segment.model)),
                   gait=replace(config.gait, model=a(config.gait.model)),
                   pose=replace(config.pose, model=a(config.pose.model)))


def _absolute_spec(spec: str) -> str:
    from allinone.io.video import LOOP
    if spec.startswith(LOOP):
        return LOOP + str(Path(spec[len(LOOP):]).expanduser().resolve())
    return spec


class RayCameras:
    """The cluster for ``watch --engine ray`` (``address``: a Ray cluster's; None starts one on the loopback):
    ``open`` connects, ``launch`` starts a camera's actor (its models load at once), ``opened`` has it open its
    stream and gives the camera's RemoteSource, ``stop`` kills every actor (and shuts down a Ray started here)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.ray = self.cls = self.affinity = None
        self.plan: list[dict] = []
        self.actors: dict[str, object] = {}
        self.started = False

    def open(self, n_cameras: int, device: str) -> None:
        from allinone.datasets.ray_engine import import_ray, init_ray, plan_actors
        self.ray, self.affinity = import_ray(self.address)
        with _signals_kept():
            self.started = init_ray(self.ray, self.address, max(n_cameras, os.cpu_count() or 1))
        self.plan = plan_actors(self.ray.nodes(), device, None)
        if not self.plan:
            raise UserError(f"the Ray cluster {self.address or '(local)'} has no CPU or GPU for a camera")
        self.cls = _worker_class(self.ray)
        self.n_cameras = n_cameras
        if n_cameras > len(self.plan):
            log.warning("Ray: %d cameras for %d CPU/GPU slots: the cameras share them", n_cameras, len(self.plan))

    def launch(self, name: str, spec: str, config, reconnect_s: float, prepare, ignore) -> None:
        """The camera's actor, on the next node in turn (its model loading starts at once)."""
        slot = self.plan[len(self.actors) % len(self.plan)]
        fits = self.n_cameras <= len(self.plan)
        self.actors[name] = self.cls.options(
            num_cpus=slot["num_cpus"] if fits else 0, num_gpus=slot["num_gpus"] if fits else 0,
            scheduling_strategy=self.affinity(slot["node"], soft=True),
        ).remote(_absolute_spec(spec), name, _absolute(config), slot["device"], reconnect_s, prepare, ignore)
        log.info("Ray: camera %s on node %s", name, slot["node"][:12])

    def opened(self, name: str, spec: str) -> tuple[RemoteSource, int]:
        """The camera's RemoteSource and its producer's silhouette stride once its actor has built the models and
        opened the stream; a UserError when the stream does not answer there."""
        try:
            about = self.ray.get(self.actors[name].open.remote())
        except Exception as exc:  # its actor died (a retry thread's ask may also meet Ray shut down at the end)
            raise UserError(f"camera {name}: its Ray actor failed ({first_line(exc)})") from None
        if not about["answered"]:
            raise UserError(about["error"])
        return RemoteSource(spec, self.actors[name], about), about["stride"]

    def stop(self) -> None:
        for a in self.actors.values():
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors.clear()
        if self.started:
            self.ray.shutdown()
            self.started = False


@contextlib.contextmanager
def _signals_kept():
    """The process's signal handlers as they were before the block: ``ray.init`` installs its own for SIGTERM (a
    Python one that exits at once, over C++ ones that dump a stack), and the service's must stay (a stop closes
    the cameras, the segments and the database, then exits). Main thread only, as signal handlers are."""
    import signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    saved = {getattr(signal, n): signal.getsignal(getattr(signal, n)) for n in names if hasattr(signal, n)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _worker_class(ray):
    """CameraWorker as a Ray actor class that knows its node."""
    @ray.remote(max_restarts=0)
    class RayCameraWorker(CameraWorker):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.node = ray.get_runtime_context().get_node_id()

    return RayCameraWorker


__all__ = ["CameraWorker", "RayCameras", "RemoteCamera", "RemoteFeed", "RemoteSource"]
