"""The webhook sink against HTTP servers on the loopback: every event POSTed in order, retries through a server
that fails at first, and servers that fail for good or never answer neither stall the producer nor the close."""
from __future__ import annotations

import time

import pytest

from allinone.config import OutputsConfig
from allinone.records import Decision, DecisionEvent
from allinone.sinks.webhook import WebhookSink
from tests.sinks.servers import Web


def event(track: int) -> DecisionEvent:
    d = Decision("cam", track, "match", "Ann", 0.25, None, [("Ann", 0.25)])
    return DecisionEvent.of(d, (5, 50), 40, True)


@pytest.fixture()
def web(request):
    w = Web(*getattr(request, "param", ("ok",)))
    yield w
    w.close()


def test_every_event_is_posted_in_order(web):
    sink = WebhookSink(web.url, OutputsConfig())
    sink.open()
    sent = [event(t) for t in range(20)]
    for e in sent:
        sink.on_event(e)
    assert sink.close() == {"sent": 20, "dropped": 0, "failed": 0}
    assert web.received == [e.to_json() for e in sent]


@pytest.mark.parametrize("web", [("flaky", 2)], indirect=True)
def test_retries_with_backoff_get_through_a_server_that_fails_at_first(web):
    sink = WebhookSink(web.url, OutputsConfig(retries=3, retry_backoff_s=0.05))
    sink.open()
    sent = [event(t) for t in range(3)]
    t0 = time.perf_counter()
    for e in sent:
        sink.on_event(e)
    assert sink.close() == {"sent": 3, "dropped": 0, "failed": 0}
    assert web.received == [e.to_json() for e in sent]
    assert sorted(web.attempts.values()) == [3, 3, 3]  # two 503s, then delivered
    assert time.perf_counter() - t0 >= 3 * (0.05 + 0.1)  # it waited 0.05 s, then 0.1 s, before the tries


@pytest.mark.parametrize("web", [("500",)], indirect=True)
def test_a_server_that_always_fails_counts_failures_after_bounded_retries(web):
    sink = WebhookSink(web.url, OutputsConfig(retries=2, retry_backoff_s=0.01))
    sink.open()
    for t in range(4):
        sink.on_event(event(t))
    assert sink.close() == {"sent": 0, "dropped": 0, "failed": 4}
    assert sorted(web.attempts.values()) == [3, 3, 3, 3] and web.received == []


@pytest.mark.parametrize("web", [("silent",)], indirect=True)
def test_a_server_that_never_answers_never_stalls(web):
    sink = WebhookSink(web.url, OutputsConfig(queue_size=100, close_wait_s=1.0, http_timeout_s=0.5, retries=5))
    sink.open()
    t0 = time.perf_counter()
    for t in range(1000):
        sink.on_event(event(t))
    assert time.perf_counter() - t0 < 0.05
    t0 = time.perf_counter()
    stats = sink.close()
    assert time.perf_counter() - t0 < 1.5
    assert stats["sent"] == 0 and stats["dropped"] >= 900 and stats["dropped"] + stats["failed"] >= 999
