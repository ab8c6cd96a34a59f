"""The recent past of the engine's input, so an event can carry what it was decided on.

:class:`TraceRing` keeps, for the last ``lookback_s`` (6 h by default), the metric rows fed to
the engine and an engine state snapshot taken every ``snapshot_every_s`` (1 h) *before* the row
at that time. :meth:`TraceRing.export` returns the oldest snapshot and every row since, enough for
the cloud to rebuild the engine (``Engine.from_state``) and replay up to the event with another
configuration: the release check's engine replay (``cloud.regression.engine_replay``). Replaying
with the device's own configuration gives the device's event again (live == replay).
"""

from __future__ import annotations

import base64
import math
from collections import deque
from collections.abc import Callable

from shared.records import TRACE_VERSION, EventTrace


def _exact(xs: list[float]) -> tuple[float | None, ...]:
    """JSON-safe and exact (JSON keeps a float's repr, which round-trips): NaN/inf -> None."""
    return tuple(float(x) if x is not None and math.isfinite(float(x)) else None for x in xs)


class TraceRing:
    """Rows ``(ts, values)`` and engine snapshots ``(ts, state bytes)`` of the last hours."""

    def __init__(self, metrics: tuple[str, ...], lookback_s: float = 6 * 3600.0,
                 snapshot_every_s: float = 3600.0) -> None:
        if lookback_s <= 0 or snapshot_every_s <= 0:
            raise ValueError(f"lookback_s={lookback_s} and snapshot_every_s={snapshot_every_s} must be > 0")
        self.metrics = metrics
        self.lookback_s = lookback_s
        self.snapshot_every_s = snapshot_every_s
        self._rows: deque[tuple[float, list[float]]] = deque()
        self._snaps: deque[tuple[float, bytes]] = deque()

    def before_row(self, ts: float, state: Callable[[], bytes]) -> None:
        """Call before the engine scores the row at ``ts``; ``state`` is a callable giving the
        engine's state bytes (only called when a snapshot is due)."""
        if not self._snaps or ts - self._snaps[-1][0] >= self.snapshot_every_s or ts < self._snaps[-1][0]:
            if self._snaps and ts < self._snaps[-1][0]:  # the clock went back: start over
                self._snaps.clear()
                self._rows.clear()
            self._snaps.append((ts, state()))
        # keep one snapshot at least lookback_s old, drop what is older than that one
        while len(self._snaps) > 1 and ts - self._snaps[1][0] >= self.lookback_s:
            self._snaps.popleft()
        t0 = self._snaps[0][0]
        while self._rows and self._rows[0][0] < t0:
            self._rows.popleft()

    def add_row(self, ts: float, values: list[float]) -> None:
        """Call after the engine scored the row at ``ts``."""
        self._rows.append((ts, list(values)))

    def reset(self) -> None:
        """Forget everything (the engine was replaced by one whose past differs)."""
        self._rows.clear()
        self._snaps.clear()

    @property
    def snapshots(self) -> int:
        return len(self._snaps)

    def export(self, start: int = 0) -> EventTrace | None:
        """The trace from snapshot ``start`` (0: the oldest, the longest trace; higher: shorter),
        or None when there is none."""
        if not 0 <= start < len(self._snaps):
            return None
        t0, state = self._snaps[start]
        rows = [r for r in self._rows if r[0] >= t0]
        return EventTrace(TRACE_VERSION, tuple(self.metrics), t0, base64.b64encode(state).decode("ascii"),
                          tuple(r[0] for r in rows), tuple(_exact(r[1]) for r in rows))
