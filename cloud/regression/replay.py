"""Replaying regression cases through a detector.

:class:`Replayer` is the seam: ``replay(case) -> bool`` (would the detector alert?). A detector
config is replayed by ``cloud.regression.engine_replay.EngineReplayer``: through the device's real
engine when the case's event carries a trace, else by :class:`ThresholdReplayer`, which re-applies
an *alert gate* to the numbers the case recorded when the device emitted its event:

* the event's combined ``score`` (in [0, 1]);
* per contributing metric, the relative deviation ``|observed - baseline| / |baseline|``
  (``|observed - baseline|`` when the baseline is 0), taken from the event record (a typed
  ``shared.records.Event``), else from the alert row's ``observed`` / ``baseline`` objects.

Gate keys read from the detector config (every other key, e.g. the engine's, is ignored here):

* ``min_score`` (default 0.0): the event alerts only if ``score >= min_score``;
* ``metric_thresholds`` (default {}): per metric, the relative deviation it must reach
  (default ``default_metric_threshold``, 0.0);
* ``min_metrics`` (default 1): how many of the event's metrics (with numbers) must reach theirs.

A case with neither a score nor any metric numbers (an owner-reported miss with no device event)
never alerts; a missing score skips the score test; metrics without numbers are not judged.
Persistence (CUSUM), warm-up and the notification rules are not replayed by the gate alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from cloud.regression.errors import ReplayError
from cloud.regression.gate_replay import (  # noqa: F401 - re-exported
    ThresholdReplayer,
    alert_numbers,
    case_numbers,
    window_numbers,
)
from shared.alert_gate import (  # noqa: F401 - re-exported: the gate lives in shared/ (device uses it too)
    GATE_KEYS,
    MAX_DEVIATION,
    AlertGate,
    AlertGateError,
    EventNumbers,
    rel_deviation,
)


@runtime_checkable
class Replayer(Protocol):
    """Anything that can say whether a detector would alert on a recorded case."""

    def replay(self, case: Any) -> bool: ...


def as_replayer(subject: Replayer | Mapping[str, Any]) -> Replayer:
    """A Replayer as is; a detector-config mapping wrapped in ``EngineReplayer`` (the real engine
    for cases with a device trace, :class:`ThresholdReplayer` for the rest)."""
    if isinstance(subject, Mapping):
        # imported here: engine_replay imports numba, needed only when a check runs
        from cloud.regression.engine_replay import EngineReplayer

        return EngineReplayer(subject)
    if isinstance(subject, Replayer):
        return subject
    raise ReplayError(f"expected a Replayer or a detector config mapping, found {type(subject).__name__}")
