"""Per-minute windows from decoded readings, with sensor sanity checks.

Readings arrive one at a time; a window closes when a reading from a later minute arrives.
Heart rate is checked for saturation (outside 25..240 bpm), NaN/inf, and a stuck sensor (the
exact same value for ``stuck_after_s`` seconds); such values become missing and are counted.
Readings older than the open window (out of order) are counted and dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from shared.payloads import Accel, Battery, Detections, HeartRate, Reading, SkinTemp, Steps

HR_MIN, HR_MAX = 25.0, 240.0


@dataclass
class MinuteWindow:
    """What the agent knows about one minute."""

    minute_ts: float  # start of the minute, epoch seconds
    hr_sum: float = 0.0
    hr_n: int = 0
    steps: int | None = None
    accel: list[np.ndarray] = field(default_factory=list)
    accel_rate: int = 0
    temp: float = math.nan
    battery: int | None = None
    det_n: int = 0  # perception unit: frames summarised this minute
    det_conf: float = 0.0  # sums over frames (divide by det_n)
    det_bright: float = 0.0
    det_objects: float = 0.0
    det_latency: float = 0.0
    det_classes: set[int] = field(default_factory=set)
    det_by_class: dict[int, int] = field(default_factory=dict)  # objects per class, summed over frames
    det_unchanged_s: float | None = None  # how long the camera's summaries have repeated exactly

    @property
    def heart_rate(self) -> float:
        return self.hr_sum / self.hr_n if self.hr_n else math.nan

    def accel_window(self, seconds: float) -> np.ndarray | None:
        """The last ``seconds`` of accelerometer samples in this minute (or None)."""
        if not self.accel:
            return None
        a = self.accel[-1] if len(self.accel) == 1 else np.concatenate(self.accel[-int(seconds) - 1:])
        n = int(seconds * self.accel_rate)
        return a[-n:] if len(a) >= n else a


class MinuteAggregator:
    """Groups readings into minute windows and counts every rejected value."""

    def __init__(self, stuck_after_s: float = 1200.0) -> None:
        self.open: MinuteWindow | None = None
        self.counts: Counter[str] = Counter()
        self.stuck_after_s = stuck_after_s
        self._last_hr: float | None = None
        self._same_since = 0.0
        self._last_det: Detections | None = None
        self._det_since = 0.0

    def add(self, ts: float, reading: Reading) -> MinuteWindow | None:
        """Add a reading; returns the window it closed, if any."""
        minute = math.floor(ts / 60.0) * 60.0
        closed = None
        if self.open is None:
            self.open = MinuteWindow(minute)
        elif minute > self.open.minute_ts:
            closed, self.open = self.open, MinuteWindow(minute)
        elif minute < self.open.minute_ts:
            self.counts["out_of_order"] += 1
            return None
        w = self.open
        if isinstance(reading, HeartRate):
            self._heart_rate(w, ts, reading.bpm)
        elif isinstance(reading, Steps):
            w.steps = (w.steps or 0) + reading.steps
        elif isinstance(reading, Accel):
            if not np.all(np.isfinite(reading.samples)):
                self.counts["accel_nonfinite"] += 1
            elif np.max(np.abs(reading.samples)) >= 7.99:
                self.counts["accel_saturated"] += 1
            else:
                w.accel.append(reading.samples)
                w.accel_rate = reading.rate_hz
        elif isinstance(reading, SkinTemp):
            if math.isfinite(reading.celsius) and 20.0 < reading.celsius < 45.0:
                w.temp = reading.celsius
            else:
                self.counts["temp_invalid"] += 1
        elif isinstance(reading, Battery):
            w.battery = reading.percent
        elif isinstance(reading, Detections):
            vals = (reading.mean_confidence, reading.brightness, reading.latency_ms)
            if not all(math.isfinite(v) for v in vals):
                self.counts["detections_nonfinite"] += 1
                return closed
            if reading != self._last_det:
                self._last_det, self._det_since = reading, ts
            w.det_unchanged_s = ts - self._det_since
            if ts - self._det_since >= self.stuck_after_s:
                self.counts["detections_frozen"] += 1  # a frozen camera repeats one frame exactly
                return closed
            w.det_n += 1
            w.det_conf += reading.mean_confidence
            w.det_bright += reading.brightness
            w.det_latency += reading.latency_ms
            w.det_objects += sum(n for _, n in reading.counts)
            w.det_classes.update(c for c, n in reading.counts if n)
            for c, n in reading.counts:
                w.det_by_class[c] = w.det_by_class.get(c, 0) + n
        return closed

    def flush(self) -> MinuteWindow | None:
        w, self.open = self.open, None
        return w

    def _heart_rate(self, w: MinuteWindow, ts: float, bpm: float) -> None:
        if not math.isfinite(bpm):
            self.counts["hr_nonfinite"] += 1
            return
        if not HR_MIN <= bpm <= HR_MAX:
            self.counts["hr_saturated"] += 1
            return
        if bpm != self._last_hr:
            self._last_hr, self._same_since = bpm, ts
        if ts - self._same_since >= self.stuck_after_s:
            self.counts["hr_stuck"] += 1
            return
        w.hr_sum += bpm
        w.hr_n += 1
