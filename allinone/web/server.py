"""The review page's server: uvicorn in a daemon thread beside the service (``serve_in_thread``).

A thread, not a process: the app reads the service's own state (its cameras) through a callable, and the service
stops it on its way out. uvicorn leaves signals to the service off the main thread."""
from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from allinone.errors import UserError
from allinone.watch.config import is_loopback

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


@dataclass
class ServerHandle:
    """A running server: its ``url`` (http://HOST:PORT, the port bound when 0 was asked) and ``stop()``."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish the requests under way, wait for the thread (at most ``timeout`` seconds)."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bound here, before the thread starts: a port in use is the caller's error at once, not a thread's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart within TIME_WAIT still binds
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot serve the review page on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 8090) -> ServerHandle:
    """Serve ``app`` (make_app's) on HOST:PORT (0: any free port) in a daemon thread; returns once it listens. A
    non-loopback host without a token is refused here too (WatchConfig refuses it first): the API names people. A
    port that cannot be bound is a UserError naming it."""
    token = getattr(getattr(app, "state", None), "token", "")
    if not token and not is_loopback(host):
        raise UserError(f"refusing to serve the review page on {host} without a token: anyone who reaches it "
                        "could read the sightings and change the gallery")
    sock = _listening_socket(host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", server_header=False)
    server = uvicorn.Server(config)  # it installs no signal handlers off the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"web {host}:{port}",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise UserError(f"the review page's server did not start on {host}:{port} (see the log above)")
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    log.info("review page on %s", url)
    return ServerHandle(url, server, thread)


__all__ = ["ServerHandle", "serve_in_thread"]
