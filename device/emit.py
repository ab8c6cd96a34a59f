"""The agent's records into the outbox: events (with their trace), findings and the rest.

:meth:`Recorder.event` turns an engine's deviation into an :class:`~shared.records.Event`, unless
the active release's alert gate holds it on the device, with the trace of the hours before it
(as long as fits the outbox's row cap); :meth:`Recorder.finding` does the same for a class-rate
or health finding. :meth:`Recorder.append` queues any record, filed under the individual; a
record a window made carries the replay watermark (device/trace_position.py). A full outbox or
one the disk kept closed is counted and logged, never raised.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable

from device.detect.class_rates import Finding
from device.detect.engine import DeviationEvent
from device.features.daily import json_floats
from device.outbox import BufferFullError, Outbox, OutboxUnavailableError
from device.releases import ReleaseHandler
from device.trace import TraceRing
from device.trace_position import TracePosition
from shared.alert_gate import EventNumbers
from shared.codec import to_json
from shared.records import Direction, Event, EventTrace, RecordBody, Severity, kind_of

logger = logging.getLogger(__name__)
TRACE_MAX_BYTES = 64 * 1024  # an event's trace: half the outbox's 128 KiB row cap


class Recorder:
    """Queues the agent's records (see the module doc); ``filed_under`` names the individual."""

    def __init__(self, outbox: Outbox, counts: Counter[str], device_id: str, position: TracePosition,
                 filed_under: Callable[[], str]) -> None:
        self.outbox = outbox
        self.counts = counts
        self.device_id = device_id
        self.position = position
        self.filed_under = filed_under

    def event(self, ev: DeviationEvent, releases: ReleaseHandler, trace: TraceRing | None) -> None:
        """An engine's deviation as an event, stamped with the release's versions."""
        gate = releases.gate
        if gate is not None and not gate.alerts(EventNumbers.from_event(ev)):
            self.counts["events_below_gate"] += 1  # the active release's gate holds it on the device
            return
        event = Event(start_ts=float(ev.start_ts), ts=float(ev.ts), metrics=tuple(ev.metrics),
                      directions=tuple(_direction(d) for d in ev.directions), score=float(ev.score),
                      severity=Severity(ev.severity), kind="sustained", baseline=json_floats(ev.baseline),
                      observed=json_floats(ev.observed), model_version=releases.model_version,
                      detector_version=releases.detector_version, trace=self.event_trace(trace))
        self.append(event, ev.ts)
        self.counts["events"] += 1
        logger.info("agent.event", extra={"device_id": self.device_id, "metrics": ev.metrics})

    def finding(self, f: Finding, releases: ReleaseHandler) -> None:
        """A class-rate or health finding as an event of its kind (no engine trace: the cloud's
        release check replays engine events only)."""
        event = f.event(releases.model_version, releases.detector_version)
        self.append(event, f.ts)
        self.counts["events" if f.kind != "health" else "health_events"] += 1
        logger.info("agent.event", extra={"device_id": self.device_id, "kind": f.kind, "metrics": [f.what]})

    def event_trace(self, trace: TraceRing | None) -> EventTrace | None:
        """The longest trace that keeps the event row well inside the outbox's row cap (a long
        ``event_trace_hours`` with many metrics is cut at a later snapshot); None if none fits."""
        if trace is None:
            return None
        for start in range(trace.snapshots):
            tr = trace.export(start)
            if tr is not None and len(json.dumps(to_json(tr), separators=(",", ":"))) <= TRACE_MAX_BYTES:
                if start:
                    self.counts["event_trace_shortened"] += 1
                return tr
        self.counts["event_trace_dropped"] += 1
        return None

    def append(self, body: RecordBody, ts: float, from_window: bool = True) -> None:
        """Queue a record. One a window made carries the window's time as the replay watermark;
        a resumed trace does not queue again what windows up to the watermark made."""
        kind = kind_of(body)
        marks = None
        if from_window:
            if self.position.replayed():
                self.counts["replayed_not_resent"] += 1
                return
            marks = self.position.marks()
        try:
            self.outbox.append(kind, self.filed_under(), ts, to_json(body), marks)
        except OutboxUnavailableError:  # the disk was full at start: counted (logged once by the outbox)
            self.counts["outbox_unavailable"] += 1
        except BufferFullError as exc:  # bytes bound or disk full, with nothing left to evict
            self.counts["outbox_refused"] += 1
            logger.error("outbox.refused", extra={"reason": str(exc), "kind": kind})


def _direction(d: int) -> Direction:
    return 1 if d > 0 else -1 if d < 0 else 0
