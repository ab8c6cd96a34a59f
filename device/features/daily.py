"""Per-day accumulation for the daily summary record (means, classes, hourly baseline points)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np


def json_floats(xs: Any) -> list[float | None]:
    """JSON-safe floats: NaN/inf become None, values rounded to 4 decimals."""
    return [None if (x is None or not math.isfinite(float(x))) else round(float(x), 4) for x in xs]


class DayAccumulator:
    """One device day; ``add`` per minute window, ``body`` when the day closes."""

    def __init__(self, day: str, ts: float, metrics: tuple[str, ...]) -> None:
        m = len(metrics)
        self.day, self.ts, self.metrics = day, ts, metrics
        self.minutes = 0
        self.steps = 0
        self.sum = np.zeros(m)
        self.n = np.zeros(m)
        self.hsum = np.zeros((24, m))
        self.hn = np.zeros((24, m))
        self.hbase = np.full((24, m), np.nan)
        self.hspread = np.full((24, m), np.nan)
        self.classes: Counter[str] = Counter()
        self.temp_max = -math.inf
        self.battery: int | None = None

    def add(self, minute_ts: float, vec: np.ndarray, steps: int | None, label: str | None, temp: float,
            battery: int | None, baseline: np.ndarray, spread: np.ndarray) -> None:
        self.minutes += 1
        ok = np.isfinite(vec)
        v = np.where(ok, vec, 0.0)
        hour = int((minute_ts % 86400.0) // 3600.0)
        self.sum += v
        self.n += ok
        self.hsum[hour] += v
        self.hn[hour] += ok
        if baseline.size:
            self.hbase[hour] = baseline
            self.hspread[hour] = spread
        if steps:
            self.steps += steps
        if label:
            self.classes[label] += 1
        if temp > self.temp_max:
            self.temp_max = temp
        if battery is not None:
            self.battery = battery

    def body(self) -> dict[str, Any]:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self.sum / self.n
            hmeans = self.hsum / self.hn
        return {
            "day": self.day, "minutes": self.minutes, "steps": self.steps,
            "metrics_mean": {m: round(float(x), 3) for m, x in zip(self.metrics, means, strict=True)
                             if math.isfinite(x)},
            "classes": dict(self.classes),
            "temp_max": self.temp_max if math.isfinite(self.temp_max) else None, "battery": self.battery,
            "hourly": {m: {"mean": json_floats(hmeans[:, j]), "baseline": json_floats(self.hbase[:, j]),
                           "spread": json_floats(self.hspread[:, j])} for j, m in enumerate(self.metrics)},
        }
