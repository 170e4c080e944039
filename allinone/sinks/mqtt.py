"""MQTT sink (paho-mqtt): each decision event's JSON on PREFIX/events and PREFIX/<stream>/events, QoS 1.

PREFIX/available says "online" while the run is connected and "offline" when it ends; the broker publishes the
last will "offline" for a run that vanished (retained, so a dashboard that subscribes later sees the state). A
broker that is down at the start or goes away mid-run is retried by paho (1 s doubling to
OutputsConfig.mqtt_reconnect_max_s); meanwhile events wait in the sink's bounded queue (sinks/base.py), so after
it comes back it gets the events from then on, and what did not fit is counted as dropped.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

from allinone.config import OutputsConfig
from allinone.errors import UserError
from allinone.records import DecisionEvent
from allinone.sinks.base import QueuedSink, split_address

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_PREFIX = "allinone"
QOS = 1


@dataclass(frozen=True)
class MqttAddress:
    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttAddress:
    """mqtt://[user[:password]@]host[:port][/prefix] (port 1883 and prefix "allinone" by default); UserError
    naming --mqtt otherwise."""
    def bad(why: str) -> UserError:
        return UserError(f"--mqtt {url!r}: {why} (expected mqtt://host[:port]/prefix)")
    parts = split_address(url, ("mqtt",), bad)
    port = parts.port
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if re.search(r"[+#\x00]", prefix) or "//" in prefix or parts.query or parts.fragment:
        raise bad("the prefix is a topic path without wildcards (+, #), empty levels or a query")
    return MqttAddress(parts.hostname, port or DEFAULT_PORT, prefix,
                       unquote(parts.username) if parts.username else None,
                       unquote(parts.password) if parts.password else None)


def stream_topic(prefix: str, stream: str) -> str:
    """PREFIX/<stream>/events, the stream's name with topic separators and wildcards made underscores."""
    return f"{prefix}/{re.sub(r'[/+#]', '_', stream)}/events"


class MqttSink(QueuedSink):
    def __init__(self, url: str, config: OutputsConfig) -> None:
        self.address = parse_mqtt_url(url)
        a = self.address
        super().__init__(f"mqtt://{a.host}:{a.port}/{a.prefix}", config)
        self.available = f"{a.prefix}/available"
        self._client = None
        self._pending: set[int] = set()  # mids of PREFIX/events publishes not yet acknowledged
        self._early: set[int] = set()  # mids acknowledged before publish() returned

    def _start(self) -> None:
        import paho.mqtt.client as mqtt  # paho loads only for runs that publish
        a = self.address
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"allinone-{uuid.uuid4().hex[:12]}")
        if a.username:
            c.username_pw_set(a.username, a.password)
        c.will_set(self.available, "offline", qos=QOS, retain=True)
        c.reconnect_delay_set(1, int(self.config.mqtt_reconnect_max_s))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c
        try:
            c.connect_async(a.host, a.port, keepalive=30)
        except (OSError, ValueError) as exc:  # a host name that does not resolve, say: kept trying all the same
            log.warning("%s: cannot connect yet (%s): retrying while the run goes on", self.name, exc)
        c.loop_start()  # paho's thread: connects, and reconnects after the broker goes away

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("%s: the broker refused the connection: %s", self.name, reason_code)
            return
        log.info("%s: connected", self.name)
        client.publish(self.available, "online", qos=QOS, retain=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._abort.is_set() and not self._closing.is_set():
            log.warning("%s: the broker went away (%s): events wait while paho reconnects", self.name, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # paho may call this holding its own locks: take only ours, and never call paho while holding ours
        with self._cv:
            if mid in self._pending:
                self._pending.discard(mid)
                self.sent += 1
            else:  # acknowledged before _deliver registered it
                self._early.add(mid)

    def _ready(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def _deliver(self, event: DecisionEvent) -> bool | None:
        payload = json.dumps(event.to_json(), allow_nan=False)
        info = self._client.publish(f"{self.address.prefix}/events", payload, qos=QOS)
        with self._cv:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.sent += 1
            else:
                self._pending.add(info.mid)
        self._client.publish(stream_topic(self.address.prefix, event.stream), payload, qos=QOS)
        return None  # counted as sent when the broker acknowledges it (_on_publish)

    def _stop(self, wait_s: float) -> None:
        c = self._client
        if c is None:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and c.is_connected():  # the last acknowledgements
            with self._cv:
                if not self._pending:
                    break
            time.sleep(0.02)
        if c.is_connected():
            info = c.publish(self.available, "offline", qos=QOS, retain=True)
            try:
                info.wait_for_publish(max(0.1, min(1.0, deadline - time.monotonic())))
            except (RuntimeError, ValueError):
                pass
        c.disconnect()
        # paho's thread may sit in a connect attempt to a host that never answers: wait for it only within the bound
        stopper = threading.Thread(target=c.loop_stop, daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))

    def _unconfirmed(self) -> int:
        return len(self._pending)


__all__ = ["MqttAddress", "MqttSink", "parse_mqtt_url", "stream_topic"]
