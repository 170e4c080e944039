"""Webhook sink: each decision event POSTed as JSON to a URL, retried with exponential backoff.

A POST that fails in a way that may pass (connection refused or reset, a timeout, HTTP 5xx, 408 or 429) is tried
again OutputsConfig.retries times, waiting retry_backoff_s, then twice that, ... (at most retry_backoff_max_s);
then it counts as failed and the next event goes. Any other answer (HTTP 4xx) fails at once: sending it again
would get the same. The queue in front (sinks/base.py) keeps frames from ever waiting on the server.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from allinone.config import OutputsConfig
from allinone.errors import UserError
from allinone.records import DecisionEvent
from allinone.sinks.base import QueuedSink, split_address

log = logging.getLogger(__name__)

RETRY_STATUS = (408, 429)


def parse_webhook_url(url: str) -> str:
    """The URL if it is http(s)://host[:port][/path]; UserError naming --webhook otherwise."""
    def bad(why: str) -> UserError:
        return UserError(f"--webhook {url!r}: {why} (expected http(s)://host[:port]/path)")
    split_address(url, ("http", "https"), bad)
    return url


def _public_name(url: str) -> str:
    """The URL without user, password and query (they may hold tokens), to name the sink in logs and run.json."""
    p = urlsplit(url)
    host = p.hostname + (f":{p.port}" if p.port else "")
    return f"{p.scheme}://{host}{p.path}"


class WebhookSink(QueuedSink):
    def __init__(self, url: str, config: OutputsConfig, name: str | None = None) -> None:
        self.url = parse_webhook_url(url)
        super().__init__(name or f"webhook:{_public_name(url)}", config)
        self._failing = False

    def _post(self, body: bytes) -> tuple[bool, bool, str]:
        """One POST: (delivered, worth retrying, why not)."""
        import urllib.error
        import urllib.request
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "allinone"})
        try:
            with urllib.request.urlopen(req, timeout=self.config.http_timeout_s) as resp:
                resp.read()
                return True, False, ""
        except urllib.error.HTTPError as exc:
            return False, exc.code >= 500 or exc.code in RETRY_STATUS, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # refused, reset, timed out, no such host
            return False, True, str(getattr(exc, "reason", exc))

    def _deliver(self, event: DecisionEvent) -> bool:
        body = json.dumps(event.to_json(), allow_nan=False).encode()
        c = self.config
        for attempt in range(c.retries + 1):
            ok, again, why = self._post(body)
            if ok:
                if self._failing:
                    log.info("%s: delivering again", self.name)
                self._failing = False
                return True
            if not again or attempt == c.retries:
                break
            # the run's end cuts the wait short (close sets _abort once its bounded drain is over)
            if self._abort.wait(min(c.retry_backoff_s * 2 ** attempt, c.retry_backoff_max_s)):
                break
        if not self._failing:  # once per outage, not per event
            log.warning("%s: an event was not delivered (%s); counted in run.json \"sinks\"", self.name, why)
        self._failing = True
        return False


__all__ = ["WebhookSink", "parse_webhook_url"]
