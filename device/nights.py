"""A collar's nights on the device: minute windows in, the morning's verdict out.

The nightly tracker (device/features/nightly.py) makes one record per night from the minute
windows (resting HR overnight, restlessness, the day's steps); the night watch
(device/detect/nightwatch.py) reads it against the collar's own nights. The morning's verdict
travels in the daily summary of the day it was read (``night``).
"""

from __future__ import annotations

from device.detect.nightwatch import NightAssessment, NightWatch
from device.features.daily import json_floats
from device.features.minute import MinuteWindow
from device.features.nightly import NightlyTracker
from shared.records import NightVerdict


class Nights:
    """The tracker, the night watch (saved with the agent's state) and the last verdict."""

    def __init__(self, watch: NightWatch) -> None:
        self.tracker = NightlyTracker()
        self.watch = watch
        self.last: NightAssessment | None = None

    def add(self, w: MinuteWindow) -> None:
        """One minute window; a completed night is read by the watch."""
        night = self.tracker.add(w.minute_ts, w.heart_rate, w.steps)
        if night is not None:
            self.last = self.watch.update(night)

    def verdict(self, day_ts: float) -> NightVerdict | None:
        """This morning's verdict on last night, for the summary of the day it was read."""
        a = self.last
        if a is None or a.day != int(day_ts // 86400.0):
            return None
        return NightVerdict(level=a.level, evidence=round(a.evidence, 3), night_z=round(a.night, 3),  # type: ignore[arg-type]
                            z=dict(zip(a.z, json_floats(a.z.values()), strict=True)),
                            baseline=dict(zip(a.baseline, json_floats(a.baseline.values()), strict=True)))
