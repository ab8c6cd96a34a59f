"""Replaying a case by its recorded numbers alone: the alert gate (see ``cloud.regression.replay``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cloud.regression.errors import ReplayError
from shared.alert_gate import AlertGate, AlertGateError, EventNumbers, rel_deviation
from shared.codec import SchemaError, from_json
from shared.records import Event


def _parsed(x: Any) -> Any:
    """An alert column as stored (JSON text) or already parsed."""
    if isinstance(x, str):
        try:
            return json.loads(x)
        except ValueError:
            return None
    return x


def alert_numbers(alert: Mapping[str, Any]) -> EventNumbers:
    """The numbers of an alert row: its score, and per metric the relative deviation of its
    ``observed`` from its ``baseline`` object (metric -> value); None where it has none."""
    score = alert.get("score")
    obs, base, names = _parsed(alert.get("observed")), _parsed(alert.get("baseline")), _parsed(alert.get("metrics"))
    obs = obs if isinstance(obs, Mapping) else {}
    base = base if isinstance(base, Mapping) else {}
    metrics = {str(m) for m in (*obs, *base, *(names if isinstance(names, list) else ()))}
    return EventNumbers.from_json({"score": score, "devs": {m: rel_deviation(obs.get(m), base.get(m))
                                                           for m in sorted(metrics)}})


def window_numbers(alert: Mapping[str, Any] | None, event_body: Any) -> EventNumbers:
    """The numbers of a recorded case: its event record when it has a readable one (the device's
    own numbers), else its alert row; empty when it has neither (an owner-reported miss)."""
    if isinstance(event_body, Mapping):
        try:
            return EventNumbers.from_event(from_json(Event, dict(event_body), "event"))
        except SchemaError:
            pass  # a body from before typed records: the alert row has the same numbers
    return alert_numbers(alert) if alert else EventNumbers(None)


def case_numbers(case: Any) -> EventNumbers:
    """The numbers of a regression case (a RegressionCase or its ``window`` mapping)."""
    window = case.window if hasattr(case, "window") else case
    if "window" in window and isinstance(window["window"], Mapping):
        window = window["window"]
    event = window.get("event") or {}
    return window_numbers(window.get("alert"), event.get("body") if isinstance(event, Mapping) else None)


class ThresholdReplayer:
    """Replays a case by applying a detector config's alert gate to its recorded numbers."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        try:
            self.gate = AlertGate.from_config(config)
        except AlertGateError as exc:
            raise ReplayError(str(exc)) from None

    def replay(self, case: Any) -> bool:
        return self.gate.alerts(case_numbers(case))
