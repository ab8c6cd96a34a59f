"""Per-day accumulation for the daily summary record (means, classes, hourly baseline points, rest and
sleep periods)."""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from device.features.rest import RestPeriod
from shared.records import DailySummary, HourlySeries, RestDay, SleepPeriod


def utc_day(ts: float) -> str:
    """UTC day of a timestamp (called once per window; the formatting is cached per day)."""
    return _day_name(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def _day_name(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


def json_floats(xs: Iterable[float | None]) -> tuple[float | None, ...]:
    """JSON-safe floats: NaN/inf become None, values rounded to 4 decimals."""
    return tuple(None if (x is None or not math.isfinite(float(x))) else round(float(x), 4) for x in xs)


class DayAccumulator:
    """One device day; ``add`` per minute window, ``body`` when the day closes."""

    def __init__(self, day: str, ts: float, metrics: tuple[str, ...], track_rest: bool = False) -> None:
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
        self.track_rest = track_rest
        self.rest_minutes = 0
        self.rest_hourly = [0] * 24  # still minutes per hour of day (the day's rest pattern)
        self.rest_periods: list[RestPeriod] = []  # periods that ended this day

    def add(self, minute_ts: float, vec: np.ndarray, steps: int | None, label: str | None, temp: float,
            battery: int | None, baseline: np.ndarray, spread: np.ndarray, rest: bool = False,
            rest_closed: Sequence[RestPeriod] = ()) -> None:
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
        self.rest_minutes += rest
        self.rest_hourly[hour] += rest
        self.rest_periods.extend(rest_closed)

    def rest_body(self) -> RestDay:
        """Rest and sleep of the day: rest minutes, and the periods that ended this day (a night's
        sleep counts on the day it ends, as wearables report it)."""
        sleep = [p for p in self.rest_periods if p.sleep]
        main = max(sleep, key=lambda p: p.minutes, default=None)
        return RestDay(
            minutes=self.rest_minutes, hourly_minutes=tuple(self.rest_hourly), periods=len(self.rest_periods),
            longest_minutes=max((p.minutes for p in self.rest_periods), default=0),
            sleep_minutes=sum(p.minutes for p in sleep), sleep_periods=len(sleep),
            main_sleep=None if main is None else SleepPeriod(main.start_ts, main.end_ts, main.minutes))

    def body(self) -> DailySummary:
        """The day's summary (the agent adds latency, counters and versions)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self.sum / self.n
            hmeans = self.hsum / self.hn
        return DailySummary(
            day=self.day, minutes=self.minutes, steps=self.steps,
            metrics_mean={m: round(float(x), 3) for m, x in zip(self.metrics, means, strict=True) if math.isfinite(x)},
            classes=dict(self.classes),
            temp_max=self.temp_max if math.isfinite(self.temp_max) else None, battery=self.battery,
            hourly={m: HourlySeries(json_floats(hmeans[:, j]), json_floats(self.hbase[:, j]),
                                    json_floats(self.hspread[:, j])) for j, m in enumerate(self.metrics)},
            rest=self.rest_body() if self.track_rest else None)
