"""What a kind of device measures: its metrics, how a minute becomes the engine's row, what its
daily summary keeps, and whether it runs the activity model. One profile per kind replaces the
agent's branches on ``cfg.kind``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from device.config import AgentConfig
from device.features.daily import DayAccumulator
from device.features.metrics import CollarMetrics, PerceptionMetrics
from device.features.minute import MinuteWindow


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


class PerceptionProfile:
    """A Raspberry Pi watching a camera: detection confidence, brightness, objects, novelty."""

    kind = "perception"
    classifies = False

    def __init__(self) -> None:
        self.features = PerceptionMetrics()

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
        return PerceptionProfile()
    return CollarProfile(cfg.quiet_minutes, score_rest=cfg.score_rest)
