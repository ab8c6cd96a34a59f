"""Device health from minute windows: a frozen camera, a data dropout, a low battery.

Health is not behaviour: these findings travel as events of kind ``health`` and the cloud decides
them with their own rules (cloud/default_rules.toml, ``kind = ["health"]``), apart from the
behaviour alerts. Each is raised once per episode:

- ``frozen``: the camera has repeated one exact detection summary for ``frozen_minutes`` (real
  scenes never repeat float confidences and brightness to the bit);
- ``dropout``: no minute window for ``dropout_minutes`` of the device's timeline (raised when data
  comes back: a device that says nothing cannot say so; the cloud's presence check covers the
  silence itself). A clock set forward looks the same from the frames (device/clock.py);
- ``battery_low``: the battery at or below ``battery_percent`` (re-armed above it + 10).

Pure computation: minute in, findings out.
"""

from __future__ import annotations

from dataclasses import dataclass

from device.detect.class_rates import Finding


@dataclass
class HealthWatch:
    frozen_minutes: float = 30.0
    dropout_minutes: float = 60.0
    battery_percent: int = 15
    _last_ts: float | None = None
    _frozen: bool = False
    _battery_low: bool = False

    def update(self, ts: float, unchanged_s: float | None, battery: int | None) -> list[Finding]:
        """One minute window: ``unchanged_s``, how long the camera's detections have repeated
        exactly (None: not a camera); ``battery``, percent if reported this minute."""
        out: list[Finding] = []
        if self._last_ts is not None and ts - self._last_ts >= self.dropout_minutes * 60.0:
            gap = ts - self._last_ts
            out.append(Finding("health", "dropout", self._last_ts + 60.0, ts, round(gap / 60.0, 1),
                               0.0, 1.0))
        self._last_ts = ts if self._last_ts is None else max(ts, self._last_ts)
        if unchanged_s is not None:
            frozen = unchanged_s >= self.frozen_minutes * 60.0
            if frozen and not self._frozen:
                out.append(Finding("health", "frozen", ts - unchanged_s, ts, round(unchanged_s / 60.0, 1),
                                   0.0, 1.0))
            self._frozen = frozen
        if battery is not None:
            if battery <= self.battery_percent and not self._battery_low:
                out.append(Finding("health", "battery_low", ts, ts, float(battery), float(self.battery_percent),
                                   1.0))
                self._battery_low = True
            elif battery > self.battery_percent + 10:
                self._battery_low = False
        return out
