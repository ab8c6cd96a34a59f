"""The daily summary record: the profile's day, and what the agent knows of itself that day.

A day (device/features/daily.py's :class:`DayAccumulator`, made by the device's profile) closes
at the first window of the next UTC day, or when the input ends. Its summary adds the agent's
latency and ingest counters, the active release (versions, models, the shadow model's agreement),
the outbox's counters and backlog (what still waits for the cloud's ack: the fleet page shows it
beside the battery) and a collar's verdict on last night.
"""

from __future__ import annotations

from dataclasses import replace

from device.budget import LatencyBudget
from device.detect.engine import Engine
from device.features.daily import DayAccumulator
from device.nights import Nights
from device.outbox import Outbox
from device.releases import AGENT_VERSION, ReleaseHandler
from shared.records import Backlog, DailySummary


def day_summary(d: DayAccumulator, *, budget: LatencyBudget, ingest: dict[str, int], engine: Engine,
                releases: ReleaseHandler, outbox: Outbox, nights: Nights | None) -> DailySummary:
    """The closed day's summary (see the module doc)."""
    rel = releases
    return replace(
        d.body(), latency=budget.report(), ingest=ingest,
        warming_up=engine.warming_up, model_version=rel.model_version,
        detector_version=rel.detector_version, agent_version=AGENT_VERSION,
        shadow=rel.shadow_stats.summary() if rel.shadow_stats.total else None,
        models=rel.status(), outbox=outbox.counters(), night=nights.verdict(d.ts) if nights is not None else None,
        backlog=Backlog(outbox.pending_count(), outbox.bytes_used))
