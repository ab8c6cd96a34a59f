"""What a kind of device measures: its metrics, how a minute becomes the engine's row, what its
daily summary keeps, and whether it runs the activity model. One profile per kind replaces the
agent's branches on ``cfg.kind``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from device.config import AgentConfig
from device.detect.class_rates import ClassRates, Finding
from device.features.daily import DayAccumulator
from device.features.metrics import CollarMetrics, PerceptionMetrics
from device.features.minute import MinuteWindow
from shared.payloads import detection_label


class DeviceProfile(Protocol):
    kind: str
    classifies: bool  # runs the activity model (and so takes model releases)

    @property
    def metrics(self) -> tuple[str, ...]: ...
    @property
    def directions(self) -> Mapping[str, int]: ...

    def vector(self, w: MinuteWindow, label: str | None) -> list[float]: ...
    def new_day(self, day: str, ts: float) -> DayAccumulator: ...
    def add_minute(self, acc: DayAccumulator, w: MinuteWindow, vec: list[float], label: str | None,
                   baseline: np.ndarray, spread: np.ndarray) -> None: ...
    def findings(self, w: MinuteWindow) -> list[Finding]: ...
    def state(self) -> dict[str, Any] | None: ...
    def restore(self, state: Mapping[str, Any]) -> None: ...


class CollarProfile:
    """A pet-health collar: heart rate, resting heart rate, activity, skin temperature (rest
    hours with ``score_rest``); its daily summary keeps rest and sleep."""

    kind = "collar"
    classifies = True

    def __init__(self, quiet_minutes: int = 12, score_rest: bool = False) -> None:
        self.features = CollarMetrics(quiet_minutes, score_rest=score_rest)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.features.metrics

    @property
    def directions(self) -> Mapping[str, int]:
        return self.features.directions

    def vector(self, w: MinuteWindow, label: str | None) -> list[float]:
        return self.features.vector(w, label)

    def new_day(self, day: str, ts: float) -> DayAccumulator:
        return DayAccumulator(day, ts, self.metrics, track_rest=True)

    def add_minute(self, acc: DayAccumulator, w: MinuteWindow, vec: list[float], label: str | None,
                   baseline: np.ndarray, spread: np.ndarray) -> None:
        acc.add(w.minute_ts, np.asarray(vec, dtype=np.float64), w.steps, label, w.temp, w.battery,
                baseline, spread, rest=self.features.rest.still, rest_closed=self.features.rest.closed)

    def findings(self, w: MinuteWindow) -> list[Finding]:
        return []

    def state(self) -> dict[str, Any] | None:
        return None

    def restore(self, state: Mapping[str, Any]) -> None:
        return None


class PerceptionProfile:
    """A Raspberry Pi watching a camera: detection confidence, brightness, objects, novelty
    (scored by the engine), and the camera's class rates by hour of day (novel classes, rates far
    off, scene changes: device/detect/class_rates.py)."""

    kind = "perception"
    classifies = False

    def __init__(self, learn_days: float = 3.0, tz_offset_h: float = 0.0) -> None:
        self.features = PerceptionMetrics(learn_days)
        self.rates = ClassRates(learn_days=learn_days, tz_offset_h=tz_offset_h)

    def findings(self, w: MinuteWindow) -> list[Finding]:
        if not w.det_n or (w.det_unchanged_s or 0.0) > 0.0:
            return []  # no summary this minute, or the exact summary again (a frozen camera): nothing seen
        objects = {detection_label(c): max(1, round(n / w.det_n)) if n else 0 for c, n in w.det_by_class.items()}
        return self.rates.update(w.minute_ts, objects)

    def state(self) -> dict[str, Any] | None:
        return self.rates.state()

    def restore(self, state: Mapping[str, Any]) -> None:
        self.rates.restore(state)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.features.metrics

    @property
    def directions(self) -> Mapping[str, int]:
        return self.features.directions

    def vector(self, w: MinuteWindow, label: str | None) -> list[float]:
        return self.features.vector(w, label)

    def new_day(self, day: str, ts: float) -> DayAccumulator:
        return DayAccumulator(day, ts, self.metrics)

    def add_minute(self, acc: DayAccumulator, w: MinuteWindow, vec: list[float], label: str | None,
                   baseline: np.ndarray, spread: np.ndarray) -> None:
        acc.add(w.minute_ts, np.asarray(vec, dtype=np.float64), w.steps, label, w.temp, w.battery,
                baseline, spread)


def profile_for(kind: str, cfg: AgentConfig) -> DeviceProfile:
    """The profile of a device kind, with the agent's settings for it."""
    if kind == "perception":
        return PerceptionProfile(cfg.learn_days, tz_offset_h=cfg.tz_offset_h)
    return CollarProfile(cfg.quiet_minutes, score_rest=cfg.score_rest)
