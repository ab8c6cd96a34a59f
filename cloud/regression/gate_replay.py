"""Replaying a case by its recorded numbers alone: the alert gate (see ``cloud.regression.replay``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloud.regression.errors import ReplayError
from shared.alert_gate import AlertGate, AlertGateError, EventNumbers, event_numbers


def case_numbers(case: Any) -> EventNumbers:
    """The numbers of a regression case (a RegressionCase or its ``window`` mapping)."""
    window = case.window if hasattr(case, "window") else case
    if "window" in window and isinstance(window["window"], Mapping):
        window = window["window"]
    event = window.get("event") or {}
    return event_numbers(window.get("alert"), event.get("body") if isinstance(event, Mapping) else None)


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
