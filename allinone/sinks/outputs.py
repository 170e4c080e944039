"""The run's sinks, built from OutputsConfig (--mqtt, --webhook), their addresses checked first."""
from __future__ import annotations

from allinone.config import OutputsConfig
from allinone.sinks.base import Sink, Sinks


def check_outputs(config: OutputsConfig) -> None:
    """Every sink address checked (UserError naming the flag) before any model loads."""
    from allinone.sinks.mqtt import parse_mqtt_url
    from allinone.sinks.webhook import parse_webhook_url
    if config.mqtt:
        parse_mqtt_url(config.mqtt)
    for url in config.webhooks:
        parse_webhook_url(url)


def build_sinks(config: OutputsConfig) -> Sinks:
    """The sinks the config names (not opened yet)."""
    from allinone.sinks.mqtt import MqttSink
    from allinone.sinks.webhook import WebhookSink
    sinks: list[Sink] = [MqttSink(config.mqtt, config)] if config.mqtt else []
    seen: dict[str, int] = {}
    for url in config.webhooks:
        n = seen[url] = seen.get(url, 0) + 1
        sink = WebhookSink(url, config)
        if n > 1:  # one URL given twice is two sinks: two names in run.json
            sink.name += f"#{n}"
        sinks.append(sink)
    return Sinks(sinks)


__all__ = ["build_sinks", "check_outputs"]
