"""Prometheus metrics of the cloud aggregator, served at ``/metrics`` on ``edgeloop cloud --http``.

Counters of this process (messages, rejections, duplicates, decisions, notifications) are read
from the aggregator's in-memory counts at scrape time; fleet-wide levels (devices by state,
rollouts by state, feedback, delivery backlog) come from the store through the read model; the
broker's own figures come from its ``$SYS`` topics; store latency is a histogram around the
aggregator's batch writes. Names follow Prometheus conventions (``_total`` counters, base units,
``edgeloop_cloud_`` / ``edgeloop_broker_`` prefixes) and are listed in docs/metrics.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud.aggregator.inbox import DROP_REASONS
from cloud.ops.broker_sys import COUNTERS
from cloud.store.read_model import StoreReader

logger = logging.getLogger(__name__)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REJECT_REASONS = ("schema", "topic", "rules", "feedback", "internal", "binding", "timestamp")
ROLLOUT_STATES = ("shadow", "canary", "fleet", "done", "halted", "rolled_back")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _snapshot(counter: Any) -> dict[str, int]:
    for _ in range(5):
        try:
            return dict(counter)
        except RuntimeError:  # another thread added a key meanwhile
            time.sleep(0)
    return {}


class CloudCollector(Collector):
    def __init__(self, svc: Any, reader: StoreReader | None) -> None:
        self.svc = svc
        self.reader = reader

    def collect(self) -> Iterator[Any]:
        svc = self.svc
        c = _snapshot(svc.agg.counts)
        yield CounterMetricFamily("edgeloop_cloud_messages_received", "MQTT messages taken off the broker "
                                  "(uplinks, status, feedback)", value=svc.received)
        rej = CounterMetricFamily("edgeloop_cloud_messages_rejected", "Messages refused, by reason (the "
                                  "rejections table has each message's text)", labels=["reason"])
        for reason in REJECT_REASONS:
            rej.add_metric([reason], c.get(f"rejected.{reason}", 0))
        yield rej
        yield CounterMetricFamily("edgeloop_cloud_batches_spoofed", "Batches claiming another device's id",
                                  value=c.get("spoofed", 0))
        yield CounterMetricFamily("edgeloop_cloud_uplinks_retained_refused", "Uplinks carrying the retain flag, "
                                  "refused (the broker would replay them)", value=svc.retained_refused)
        yield CounterMetricFamily("edgeloop_cloud_records_stored", "Records stored (first delivery)",
                                  value=c.get("records_new", 0))
        yield CounterMetricFamily("edgeloop_cloud_records_duplicate", "Records delivered again and stored "
                                  "once (acked again)", value=c.get("records_duplicate", 0))
        dec = CounterMetricFamily("edgeloop_cloud_decisions", "Alert decisions by outcome", labels=["action"])
        for action in ("notify", "collect_more", "hold", "suppress"):
            dec.add_metric([action], c.get(f"decision.{action}", 0))
        for key, n in c.items():
            if key.startswith("decision.") and key[9:] not in ("notify", "collect_more", "hold", "suppress"):
                dec.add_metric([key[9:]], n)
        yield dec
        yield GaugeMetricFamily("edgeloop_cloud_inbox_messages", "Messages received, waiting to be handled",
                                value=svc.inbox.qsize())
        dropped = CounterMetricFamily("edgeloop_cloud_inbox_dropped", "Messages dropped to keep the inbox "
                                      "bounded and fair, by reason", labels=["reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([reason], svc.inbox.dropped.get(reason, 0))
        yield dropped
        yield GaugeMetricFamily("edgeloop_cloud_connected", "1 while connected to the broker",
                                value=1.0 if svc.connected.is_set() else 0.0)
        sent = CounterMetricFamily("edgeloop_cloud_notifications_sent", "Notification deliveries that "
                                   "succeeded, by channel", labels=["channel"])
        failed = CounterMetricFamily("edgeloop_cloud_notifications_failed", "Notification delivery attempts "
                                     "that failed (retried unless given up), by channel", labels=["channel"])
        gave_up = CounterMetricFamily("edgeloop_cloud_notifications_given_up", "Deliveries given up after "
                                      "their retries, by channel", labels=["channel"])
        for n in svc.agg.notifiers:
            counts = _snapshot(getattr(n, "counts", {}))
            for ch in getattr(n, "channels", {}):
                sent.add_metric([ch], counts.get(f"{ch}.sent", 0))
                failed.add_metric([ch], counts.get(f"{ch}.failed", 0))
                gave_up.add_metric([ch], counts.get(f"{ch}.gave_up", 0))
        yield sent
        yield failed
        yield gave_up
        yield from self._store_levels()
        yield from self._broker()

    def _store_levels(self) -> Iterator[Any]:
        path = self.reader.url.path if self.reader is not None else None
        if self.reader is None or (self.reader.url.dialect == "sqlite" and not (path and Path(path).exists())):
            return
        try:
            with self.reader.open() as rm:
                devices = rm.devices_by_state()
                rollouts = rm.rollouts_by_state()
                feedback = rm.feedback_by_action()
                deliveries = rm.deliveries_by_state()
        except Exception as exc:  # a scrape must answer with what it has: the store's levels are left out
            logger.warning("metrics.store_unreadable", extra={"reason": str(exc)})
            return
        g = GaugeMetricFamily("edgeloop_cloud_devices", "Devices by their last status (online, offline = "
                              "last will, stopped)", labels=["state"])
        for state in sorted({"online", "offline", "stopped", *devices}):
            g.add_metric([state], devices.get(state, 0))
        yield g
        r = GaugeMetricFamily("edgeloop_cloud_rollouts", "Model rollouts by stage", labels=["stage"])
        for state in sorted({*ROLLOUT_STATES, *rollouts}):
            r.add_metric([state], rollouts.get(state, 0))
        yield r
        f = CounterMetricFamily("edgeloop_cloud_feedback", "Owner feedback recorded, by action", labels=["action"])
        for action, n in sorted(feedback.items()):
            f.add_metric([action], n)
        yield f
        d = GaugeMetricFamily("edgeloop_cloud_notification_deliveries", "Notification deliveries by channel "
                              "and state (pending, retrying, sent, failed)", labels=["channel", "state"])
        for (ch, state), n in sorted(deliveries.items()):
            d.add_metric([ch, state], n)
        yield d

    def _broker(self) -> Iterator[Any]:
        values = self.svc.broker_sys.snapshot()
        for name, value in sorted(values.items()):
            if name in COUNTERS:
                yield CounterMetricFamily(f"edgeloop_broker_{name}", f"Broker $SYS: {name.replace('_', ' ')}",
                                          value=value)
            else:
                yield GaugeMetricFamily(f"edgeloop_broker_{name}", f"Broker $SYS: {name.replace('_', ' ')}",
                                        value=value)


class CloudMetrics:
    """The registry behind ``/metrics``; times the store's batch writes."""

    def __init__(self, svc: Any, reader: StoreReader | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.store_seconds = Histogram("edgeloop_cloud_store_seconds", "Time to store one uplink batch "
                                       "(batches stored together share the statement's time)",
                                       buckets=STORE_BUCKETS, registry=self.registry)
        self.registry.register(CloudCollector(svc, reader))
        _time_calls(svc.agg.store, "store_many", self._observe_batches)

    def _observe_batches(self, seconds: float, batches: Any) -> None:
        n = max(1, len(batches))
        for _ in range(n):
            self.store_seconds.observe(seconds / n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _time_calls(obj: Any, name: str, observe: Callable[[float, Any], None]) -> None:
    """Wrap ``obj.name`` so every call's duration is observed with its first argument (the store
    itself stays unaware)."""
    inner = getattr(obj, name)

    def timed(arg: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(arg, *args, **kwargs)
        finally:
            observe(time.perf_counter() - t0, arg)

    setattr(obj, name, timed)
