"""Replaying regression cases through the device's real engine with a candidate's detector config.

A device event carries a ``trace`` (``device.trace.TraceRing``): an engine state snapshot from a
few hours before the event and every metric row since. :class:`EngineReplayer` rebuilds the
engine from that snapshot with the candidate's engine settings
(``device.detect.detector_config.engine_config``), replays the rows, and says "alert" when the
replay raises an event, up to the recorded event's time, that passes the candidate's alert gate
(``shared.alert_gate``). So a candidate that changes the engine (a CUSUM threshold, a warm-up, a
spread floor) is judged on what it would have done, not on the numbers the old engine produced.

Cases without a trace (events from agents before traces, owner-reported misses with no device
event) fall back to the gate on the recorded numbers (:class:`ThresholdReplayer`). Replaying
with the device's own config reproduces the device's event (tested).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from cloud.regression.errors import ReplayError
from cloud.regression.gate_replay import ThresholdReplayer
from device.detect.detector_config import engine_config
from device.detect.engine import DeviationEvent, Engine, EngineStateError
from shared.alert_gate import EventNumbers

logger = logging.getLogger(__name__)
SLACK_S = 60.0  # a replayed event up to one row after the recorded one still counts


def case_trace(case: Any) -> tuple[dict[str, Any], float] | None:
    """(trace, recorded event ts) of a case (a RegressionCase or its window), if it has one."""
    window = case.window if hasattr(case, "window") else case
    if isinstance(window, Mapping) and isinstance(window.get("window"), Mapping):
        window = window["window"]
    event = window.get("event") if isinstance(window, Mapping) else None
    body = event.get("body") if isinstance(event, Mapping) else None
    trace = body.get("trace") if isinstance(body, Mapping) else None
    if not isinstance(trace, Mapping):
        return None
    try:
        return dict(trace), float(body["ts"])
    except (KeyError, TypeError, ValueError):
        return None


def replay_trace(trace: Mapping[str, Any], config: Mapping[str, Any], until: float | None = None
                 ) -> list[DeviationEvent]:
    """The events the engine raises on ``trace`` with ``config``'s engine settings (rows after
    ``until`` are not replayed). Raises ReplayError naming what is wrong with the trace."""
    try:
        metrics = tuple(str(m) for m in trace["metrics"])
        state = base64.b64decode(str(trace["state"]), validate=True)
        ts = np.asarray(trace["ts"], dtype=np.float64)
        vals = np.asarray([[np.nan if v is None else v for v in row] for row in trace["values"]],
                          dtype=np.float64).reshape(len(ts), len(metrics))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ReplayError(f"trace unusable ({exc}); expected metrics, base64 state, ts and values "
                          "of equal length as written by device.trace.TraceRing") from None
    try:
        eng = Engine.from_state(state, metrics, config=engine_config(config))
    except (EngineStateError, ValueError) as exc:
        raise ReplayError(f"trace state or detector config unusable: {exc}") from None
    if until is not None:
        keep = ts <= until + SLACK_S
        ts, vals = ts[keep], vals[keep]
    return list(eng.process(ts, vals).events)


class EngineReplayer:
    """Replays a case through the real engine (when it has a trace), then the alert gate."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.gate = ThresholdReplayer(config)  # validates the gate keys
        try:
            engine_config(config)
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        self.replayed = 0  # cases judged by the engine (the rest by the gate on recorded numbers)
        self.unusable: list[str] = []  # traces that could not be replayed (judged by the gate)

    def replay(self, case: Any) -> bool:
        found = case_trace(case)
        if found is None:
            return self.gate.replay(case)
        trace, event_ts = found
        try:
            events = replay_trace(trace, self.config, until=event_ts)
        except ReplayError as exc:  # a damaged trace costs this case its engine replay, no more
            self.unusable.append(f"case {getattr(case, 'id', '?')}: {exc}")
            logger.warning("regression.trace_unusable", extra={"case": getattr(case, "id", None),
                                                                "reason": str(exc)})
            return self.gate.replay(case)
        self.replayed += 1
        return any(self.gate.gate.alerts(EventNumbers.from_event(ev)) for ev in events)
