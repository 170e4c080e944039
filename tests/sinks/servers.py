"""Real servers on the loopback for the sink tests: a Mosquitto broker (the Debian package) and HTTP servers
(the standard library's) that record, fail at first, or never answer."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:port, anonymous; stop() kills it, start() brings it back on the same port."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            pytest.skip("mosquitto missing here (.ci/run installs it)")
        self.exe, self.port = exe, free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Subscriber:
    """A paho client subscribed to ``topics``; ``messages`` holds (topic, payload text) as they arrive."""

    def __init__(self, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt
        self.messages: list[tuple[str, str]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 1)
        subscribed = threading.Event()

        def on_connect(c, u, flags, rc, props):
            c.subscribe([(t, 1) for t in topics])

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode()))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test's subscriber did not subscribe"
        self.resubscribed = subscribed

    def on(self, topic: str) -> list[dict]:
        return [json.loads(p) for t, p in self.messages if t == topic]

    def wait_for(self, cond, seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        return cond()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Web:
    """An HTTP server in a thread. mode: "ok" records every POST; "flaky" answers 503 to the first ``fail`` POSTs of
    each body, then records; "500" always answers 500; "silent" never answers."""

    def __init__(self, mode: str = "ok", fail: int = 0) -> None:
        self.mode, self.fail = mode, fail
        self.received: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.release = threading.Event()
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                n = web.attempts[body] = web.attempts.get(body, 0) + 1
                if web.mode == "silent":
                    web.release.wait(30)
                    return
                if web.mode == "500" or (web.mode == "flaky" and n <= web.fail):
                    self.send_response(500 if web.mode == "500" else 503)
                    self.end_headers()
                    return
                web.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
