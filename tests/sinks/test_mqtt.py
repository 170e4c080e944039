"""The MQTT sink against a real Mosquitto broker on the loopback: topics, order, availability and its last will's
state, a broker killed and restarted mid-way, and a broker that is not there."""
from __future__ import annotations

import time

import pytest

from allinone.config import OutputsConfig
from allinone.records import Decision, DecisionEvent
from allinone.sinks.mqtt import MqttSink
from tests.sinks.servers import Broker, Subscriber, free_port


def event(track: int, stream: str = "cam1", final: bool = False) -> DecisionEvent:
    d = Decision(stream, track, "unknown", None, 0.5 + track / 100, "no_candidate", [])
    return DecisionEvent.of(d, (1, 10 + track), 30, final)


@pytest.fixture()
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def test_events_arrive_in_order_on_both_topics_with_availability(broker):
    sub = Subscriber(broker.port, ["site/events", "site/+/events", "site/available"])
    sink = MqttSink(f"{broker.url}/site", OutputsConfig())
    sink.open()
    sent = [event(t, "cam1" if t % 2 else "cam2") for t in range(10)]
    for e in sent:
        sink.on_event(e)
    assert sub.wait_for(lambda: len(sub.on("site/events")) == 10 and
                        len(sub.on("site/cam1/events")) + len(sub.on("site/cam2/events")) == 10)
    stats = sink.close()
    assert sub.on("site/events") == [e.to_json() for e in sent]
    assert sub.on("site/cam1/events") == [e.to_json() for e in sent if e.stream == "cam1"]
    assert sub.on("site/cam2/events") == [e.to_json() for e in sent if e.stream == "cam2"]
    assert sub.wait_for(lambda: [p for t, p in sub.messages if t == "site/available"][-1:] == ["offline"])
    assert [p for t, p in sub.messages if t == "site/available"][0] == "online"
    assert stats == {"sent": 10, "dropped": 0, "failed": 0}
    sub.close()


def test_broker_killed_and_restarted_mid_way(broker):
    sub = Subscriber(broker.port, ["p/events"])
    sink = MqttSink(f"{broker.url}/p", OutputsConfig(queue_size=5, mqtt_reconnect_max_s=1.0))
    sink.open()
    before = [event(t) for t in range(3)]
    for e in before:
        sink.on_event(e)
    assert sub.wait_for(lambda: len(sub.on("p/events")) == 3)
    broker.stop()
    time.sleep(0.5)
    t0 = time.perf_counter()
    for t in range(100, 120):  # while the broker is away: 20 events into a queue of 5
        sink.on_event(event(t))
    assert time.perf_counter() - t0 < 0.05  # the producer never waited
    sub.resubscribed.clear()
    broker.start()
    assert sub.resubscribed.wait(15), "the test's subscriber did not come back"
    assert sub.wait_for(lambda: sink._ready(), 15), "the sink did not reconnect"
    after = [event(t) for t in range(200, 205)]
    for e in after:
        sink.on_event(e)
    assert sub.wait_for(lambda: [m for m in sub.on("p/events") if m["track"] >= 200] == [e.to_json() for e in after])
    stats = sink.close()
    assert sub.on("p/events")[:3] == [e.to_json() for e in before]
    assert stats["dropped"] >= 15 and stats["sent"] >= 3 + 5 and stats["failed"] == 0


def test_a_broker_that_is_not_there_never_stalls_and_close_is_bounded():
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/x", OutputsConfig(queue_size=100, close_wait_s=1.0))
    sink.open()
    events = [event(t) for t in range(1000)]
    t0 = time.perf_counter()
    for e in events:
        sink.on_event(e)
    assert time.perf_counter() - t0 < 0.05
    t0 = time.perf_counter()
    stats = sink.close()
    assert time.perf_counter() - t0 < 3.0
    assert stats == {"sent": 0, "dropped": 1000, "failed": 0}
