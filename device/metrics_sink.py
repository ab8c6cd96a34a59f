"""The agent's metrics hook: the agent calls a sink; the default sink does nothing.

``edgeloop agent --metrics HOST:PORT`` installs a Prometheus sink (device/metrics_prom.py); the
agent never imports prometheus_client itself, so a collar that does not export metrics pays one
no-op call per window.
"""

from __future__ import annotations

from typing import Protocol


class MetricsSink(Protocol):
    def window(self, seconds: float) -> None:
        """One minute window scored (features + engine), in seconds of processing."""

    def inference(self, seconds: float) -> None:
        """One activity classification, in seconds."""


class NullSink:
    """Does nothing (the default)."""

    def window(self, seconds: float) -> None:
        pass

    def inference(self, seconds: float) -> None:
        pass


NULL_SINK = NullSink()
