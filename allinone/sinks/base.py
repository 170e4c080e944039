"""The sink interface and the queue every network sink stands behind.

A sink is opened once, handed each decision event (``on_event``) and closed once. The network sinks must never
stall the frames that produce the events: ``on_event`` only appends to a bounded queue, and a background thread
delivers. When the queue is full the oldest event is dropped (the newest say more about who is in view now); drops
are counted and warned about once. ``close`` waits a bounded time for the queue to drain, so a dead broker or
server delays the end of a run by at most OutputsConfig.close_wait_s.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol

from allinone.config import OutputsConfig
from allinone.records import DecisionEvent

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    def open(self) -> None: ...

    def on_event(self, event: DecisionEvent) -> None: ...

    def close(self) -> dict: ...


class QueuedSink:
    """A sink whose deliveries run on its own thread from a bounded queue. Subclasses give ``_deliver(event)``
    (True: sent, False: failed for good, None: counted later, as an MQTT acknowledgement) and may give ``_ready()``
    (False while there is nowhere to deliver to: events wait in the queue), ``_start()`` and ``_stop()``."""

    def __init__(self, name: str, config: OutputsConfig) -> None:
        self.name, self.config = name, config
        self._queue: deque[DecisionEvent] = deque()
        self._cv = threading.Condition()
        self._closing = threading.Event()  # no more events come; drain then stop
        self._abort = threading.Event()  # the drain's time is up: stop retrying
        self._thread: threading.Thread | None = None
        self.sent = self.dropped = self.failed = 0
        self._warned = False

    def open(self) -> None:
        self._start()
        self._thread = threading.Thread(target=self._work, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def on_event(self, event: DecisionEvent) -> None:
        with self._cv:
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self.dropped += 1
                if not self._warned:
                    self._warned = True
                    log.warning("%s: %d events wait to be sent: dropping the oldest (counted in run.json "
                                "\"sinks\")", self.name, self.config.queue_size)
            self._queue.append(event)
            self._cv.notify()

    def close(self) -> dict:
        """Drain for at most close_wait_s, then stop; returns {sent, dropped, failed} (what was left unsent counts
        as dropped)."""
        deadline = time.monotonic() + self.config.close_wait_s
        self._closing.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        with self._cv:
            left = len(self._queue)
            self._queue.clear()
        self._stop(max(0.0, deadline - time.monotonic()))
        with self._cv:
            self.dropped += left + self._unconfirmed()
            if left:
                log.warning("%s: %d events not sent by the end of the run", self.name, left)
            return {"sent": self.sent, "dropped": self.dropped, "failed": self.failed}

    def _count(self, sent: bool) -> None:
        with self._cv:
            if sent:
                self.sent += 1
            else:
                self.failed += 1

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing.is_set():
                    self._cv.wait()
                if not self._queue or self._abort.is_set():
                    return
            if not self._ready():
                time.sleep(0.05)  # e.g. the broker is away: the events wait (and the oldest go when it is full)
                continue
            with self._cv:
                if not self._queue:
                    continue
                event = self._queue.popleft()
            done = self._deliver(event)
            if done is not None:
                self._count(done)

    # what a subclass gives
    def _start(self) -> None:
        pass

    def _ready(self) -> bool:
        return True

    def _deliver(self, event: DecisionEvent) -> bool | None:
        raise NotImplementedError

    def _stop(self, wait_s: float) -> None:
        pass

    def _unconfirmed(self) -> int:
        """Events handed on but never confirmed by the end (called with the lock held)."""
        return 0


class Sinks:
    """The run's sinks as one: each event goes to every sink; ``close`` returns run.json's "sinks" entry."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self._closed: dict | None = None

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def open(self) -> "Sinks":
        for s in self.sinks:
            s.open()
        return self

    def on_event(self, event: DecisionEvent) -> None:
        for s in self.sinks:
            s.on_event(event)

    def close(self) -> dict:
        """Each sink closed once (its bounded drain): {name: {sent, dropped, failed}}."""
        if self._closed is None:
            self._closed = {s.name: s.close() for s in self.sinks}
        return self._closed

    def __enter__(self) -> "Sinks":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()  # also when the run fails: no sink thread outlives it for more than its drain


def split_address(url: str, schemes: tuple[str, ...], bad):
    """``urlsplit(url)`` when its scheme is one of ``schemes`` and it names a host and a valid port (or none);
    otherwise ``bad(why)`` (a UserError naming the flag) is raised."""
    from urllib.parse import urlsplit

    if "#" in url:  # urlsplit would take it for a fragment and drop it silently
        raise bad("a URL here has no '#'")
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise bad(f"the scheme must be {' or '.join(schemes)}, got {parts.scheme or 'none'!r}")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise bad("no host")
    if port == 0:
        raise bad("the port must be a number from 1 to 65535")
    return parts


__all__ = ["QueuedSink", "Sink", "Sinks", "split_address"]
