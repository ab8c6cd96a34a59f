"""Prometheus metrics for ``edgeloop agent --metrics HOST:PORT`` (imported only with that flag).

Histograms are fed by the agent's sink calls; everything else is read when Prometheus scrapes:
counters from the agent's in-memory counts, the outbox's depth, bytes and sync lag through a
read-only SQLite connection of its own (WAL lets it read while the agent writes), so the agent's
loop does no extra work for a scrape. Names: docs/metrics.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)
# per-window processing: the budget is 20 ms; the engine alone takes microseconds
WINDOW_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
INFERENCE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)
DECODER_REJECTS = ("crc_errors", "bad_length", "bad_version")


class PrometheusSink:
    """The agent's MetricsSink, backed by two histograms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.windows = Histogram("edgeloop_agent_scoring_seconds", "Processing time of one minute window "
                                 "(features, classification, engine)", buckets=WINDOW_BUCKETS, registry=registry)
        self.inferences = Histogram("edgeloop_agent_inference_seconds", "Time of one activity classification "
                                    "(TFLite)", buckets=INFERENCE_BUCKETS, registry=registry)

    def window(self, seconds: float) -> None:
        self.windows.observe(seconds)

    def inference(self, seconds: float) -> None:
        self.inferences.observe(seconds)


def _snapshot(counter: Any) -> dict[str, int]:
    """A copy of a Counter another thread may be adding keys to."""
    for _ in range(5):
        try:
            return dict(counter)
        except RuntimeError:  # changed size during iteration
            time.sleep(0)
    return {}


class AgentCollector(Collector):
    """Reads the agent's state at scrape time."""

    def __init__(self, agent: Any, outbox_path: Path) -> None:
        self.agent = agent
        self.outbox_path = outbox_path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _outbox(self) -> tuple[list[tuple[str, int, int]], float | None, dict[str, int]]:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True,
                                             check_same_thread=False)
                self._conn.execute("PRAGMA busy_timeout=1000")
            kinds = self._conn.execute("SELECT kind, COUNT(*), COALESCE(SUM(size), 0) FROM outbox "
                                       "GROUP BY kind").fetchall()
            oldest = self._conn.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
            counters = dict(self._conn.execute("SELECT name, value FROM counters").fetchall())
        return kinds, oldest, counters

    def collect(self) -> Iterator[Any]:
        a = self.agent
        info = InfoMetricFamily("edgeloop_agent", "This agent: device, individual and versions")
        info.add_metric([], {"device_id": a.cfg.device_id, "individual_id": a.individual_id or "",
                             "kind": a.cfg.kind, "model_version": str(a.releases.model_version),
                             "detector_version": str(a.releases.detector_version)})
        yield info
        stats = a.decoder.stats
        yield CounterMetricFamily("edgeloop_agent_frames", "Frames decoded from the source (good CRC)",
                                  value=stats.frames_ok)
        counts = _snapshot(a.counts)
        rej = CounterMetricFamily("edgeloop_agent_frames_rejected", "Frames or payloads refused, by reason",
                                  labels=["reason"])
        for reason in DECODER_REJECTS:
            rej.add_metric([reason], getattr(stats, reason))
        rej.add_metric(["payload"], counts.get("payload_rejected", 0))
        yield rej
        yield CounterMetricFamily("edgeloop_agent_rejected_bytes", "Source bytes that were not part of a good "
                                  "frame", value=stats.bytes_rejected)
        yield CounterMetricFamily("edgeloop_agent_windows", "Minute windows scored", value=counts.get("windows", 0))
        yield CounterMetricFamily("edgeloop_agent_events", "Deviation events queued for the cloud",
                                  value=counts.get("events", 0))
        budget = a.budget
        yield CounterMetricFamily("edgeloop_agent_budget_overruns", "Windows over the processing budget",
                                  value=budget.overruns)
        yield GaugeMetricFamily("edgeloop_agent_shed_level", "Load shedding level (0 all work, 1 no shadow "
                                "model, 2 no raw capture either)", value=budget.level)
        yield GaugeMetricFamily("edgeloop_agent_source_backlog_bytes", "Bytes waiting in the serial port",
                                value=_safe(a.source_backlog))
        up = a.uplink
        yield GaugeMetricFamily("edgeloop_agent_connected", "1 while connected to the broker",
                                value=1.0 if up is not None and up.connected else 0.0)
        yield CounterMetricFamily("edgeloop_agent_connects", "Successful broker connections",
                                  value=up.sessions if up is not None else 0)
        yield GaugeMetricFamily("edgeloop_agent_outbox_available", "1 while the outbox is open (0: the disk was "
                                "full at start; records are counted, not kept, until it opens)",
                                value=1.0 if getattr(a.outbox, "available", True) else 0.0)
        not_kept = CounterMetricFamily("edgeloop_agent_not_kept", "What a full disk kept from being saved: "
                                       "records (outbox_unavailable), engine state (state_unsaved)", labels=["what"])
        for what in ("outbox_unavailable", "state_unsaved"):
            not_kept.add_metric([what], counts.get(what, 0))
        yield not_kept
        try:
            kinds, oldest, ob_counters = self._outbox()
        except sqlite3.Error as exc:  # not created yet, or locked for longer than a scrape waits
            logger.debug("metrics.outbox_unreadable", extra={"reason": str(exc)})
            return
        rows = GaugeMetricFamily("edgeloop_agent_outbox_rows", "Rows waiting for the cloud's ack, by kind",
                                 labels=["kind"])
        for kind in ("event", "summary", "report", "raw"):
            rows.add_metric([kind], next((n for k, n, _ in kinds if k == kind), 0))
        yield rows
        yield GaugeMetricFamily("edgeloop_agent_outbox_bytes", "Bytes held in the outbox",
                                value=sum(b for _, _, b in kinds))
        yield GaugeMetricFamily("edgeloop_agent_sync_lag_seconds", "Age of the oldest row the cloud has not "
                                "acknowledged (0 when everything is acked)",
                                value=max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        evicted = CounterMetricFamily("edgeloop_agent_outbox_evicted", "Rows evicted to stay within "
                                      "outbox.max_bytes or the disk, by kind", labels=["kind"])
        refused = CounterMetricFamily("edgeloop_agent_outbox_refused", "Rows the outbox refused (full of "
                                      "events, or too large), by kind", labels=["kind"])
        for name, value in sorted(ob_counters.items()):
            if name.startswith("evicted."):
                evicted.add_metric([name.rsplit(".", 1)[-1]], value)
            elif name.startswith("refused."):
                refused.add_metric([name.rsplit(".", 1)[-1]], value)
        yield evicted
        yield refused


def _safe(fn: Any) -> float:
    try:
        return float(fn())
    except Exception:
        return 0.0


def parse_addr(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` for all interfaces) -> (host, port); ValueError says how."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:9108 or :9108")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve_agent_metrics(agent: Any, spec: str) -> tuple[Any, int]:
    """Install the sink, register the collector, start the HTTP endpoint; returns (server, port)."""
    registry = CollectorRegistry(auto_describe=False)
    agent.metrics = PrometheusSink(registry)
    outbox = Path(agent.cfg.outbox.path or Path(agent.cfg.state_dir) / "outbox.db")
    registry.register(AgentCollector(agent, outbox))
    host, port = parse_addr(spec)
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    logger.info("agent.metrics_serving", extra={"address": f"{host}:{bound}", "path": "/metrics"})
    return server, bound
