"""The aggregator's clock: the wall clock live; the records' own time in replays and simulations.

The rules' windows (cooldowns, follow-ups, reminders, the implicit-feedback sweep, rollout gates)
are measured on this clock. A replay or a fleet simulation runs days of data in seconds, so its
"now" is the newest record timestamp the aggregator has stored (:class:`RecordClock`); a live
cloud uses :class:`WallClock`. Record timestamps are checked against the wall clock either way
(cloud/timestamps.py).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the aggregator needs of a clock."""

    def now(self) -> float:
        """The current time in seconds since the epoch."""
        ...

    def observe(self, ts: float) -> None:
        """A stored record's timestamp (a record clock moves with it)."""
        ...

    def started(self) -> bool:
        """False until the clock has a time (a record clock before its first record)."""
        ...


class WallClock:
    """Live time."""

    def now(self) -> float:
        return time.time()

    def observe(self, ts: float) -> None:
        """Live time does not follow the records."""

    def started(self) -> bool:
        return True


class RecordClock:
    """Time is the newest record timestamp seen (never goes back); 0 before the first."""

    def __init__(self, start: float = 0.0) -> None:
        self.latest = start

    def now(self) -> float:
        return self.latest

    def observe(self, ts: float) -> None:
        if ts > self.latest:
            self.latest = ts

    def started(self) -> bool:
        return self.latest > 0.0
