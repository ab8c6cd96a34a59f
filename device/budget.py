"""Per-window processing budget: measure every window, report p50/p99 and overruns, shed load.

Shedding levels (raised before the agent can fall behind the sensor, lowered when calm):
0 everything runs; 1 the shadow model is skipped; 2 raw-window capture is skipped too.
The level rises when the recent mean processing time passes ``high`` x budget or the source
backlog grows past ``backlog_bytes``; it falls after ``calm_windows`` windows below ``low`` x budget.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from shared.records import Latency

SHED_SHADOW, SHED_RAW = 1, 2


class LatencyBudget:
    def __init__(self, budget_ms: float, window: int = 4096, high: float = 0.8, low: float = 0.3,
                 calm_windows: int = 200, backlog_bytes: int = 16384) -> None:
        self.budget_ms = budget_ms
        self._ring = np.zeros(window, dtype=np.float64)
        self._n = 0
        self._ewma = 0.0
        self.high, self.low, self.calm_windows, self.backlog_bytes = high, low, calm_windows, backlog_bytes
        self.level = 0
        self._calm = 0
        self.overruns = 0
        self.shed: Counter[str] = Counter()

    def record(self, ms: float, backlog: int = 0) -> None:
        """Record one window's processing time (ms) and the source backlog (bytes)."""
        self._ring[self._n % len(self._ring)] = ms
        self._n += 1
        self._ewma = ms if self._n == 1 else 0.9 * self._ewma + 0.1 * ms
        if ms > self.budget_ms:
            self.overruns += 1
        if self._ewma > self.high * self.budget_ms or backlog > self.backlog_bytes:
            self.level = min(SHED_RAW, self.level + 1)
            self._calm = 0
        elif self._ewma < self.low * self.budget_ms:
            self._calm += 1
            if self._calm >= self.calm_windows and self.level > 0:
                self.level -= 1
                self._calm = 0

    def allows(self, level: int) -> bool:
        """May optional work of this shedding level run now? Counts what was shed."""
        ok = self.level < level
        if not ok:
            self.shed["shadow" if level == SHED_SHADOW else "raw"] += 1
        return ok

    def report(self) -> Latency:
        """p50/p99 (ms) over the recent windows, overruns, level, and shed counts."""
        k = min(self._n, len(self._ring))
        recent = self._ring[:k]
        p50, p99 = (np.percentile(recent, [50, 99]) if k else (0.0, 0.0))
        return Latency(windows=self._n, p50_ms=round(float(p50), 4), p99_ms=round(float(p99), 4),
                       budget_ms=float(self.budget_ms), overruns=self.overruns, shed_level=self.level,
                       shed_shadow=self.shed["shadow"], shed_raw=self.shed["raw"])
