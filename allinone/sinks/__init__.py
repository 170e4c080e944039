"""Outputs that plug in: each decision event sent to an MQTT broker or webhooks, without ever stalling frames."""
