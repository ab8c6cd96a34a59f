"""The alert gate of a detector config, shared by the device (which applies the active release's
gate to its events) and the cloud (whose release check replays recorded cases through it).

Gate keys: ``min_score`` (the event's score must reach it), ``metric_thresholds`` and
``default_metric_threshold`` (per metric, the relative deviation ``|observed - baseline| /
|baseline|`` it must reach), ``min_metrics`` (how many judged metrics must pass). Every other key
of a detector config is ignored here. See ``cloud/regression/replay.py`` for the replay rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

GATE_KEYS = ("min_score", "metric_thresholds", "default_metric_threshold", "min_metrics")


class HasNumbers(Protocol):
    """What the gate reads of an event (device.detect.engine.DeviationEvent, shared.records.Event)."""

    @property
    def score(self) -> float: ...
    @property
    def metrics(self) -> Sequence[str]: ...
    @property
    def baseline(self) -> Sequence[float | None]: ...
    @property
    def observed(self) -> Sequence[float | None]: ...


class AlertGateError(ValueError):
    """A detector config's gate keys are not usable (the message names the key)."""


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


MAX_DEVIATION = 1e9  # caps |o - b| / |b| for tiny baselines (keeps datasets finite JSON)


def rel_deviation(observed: Any, baseline: Any) -> float | None:
    o, b = _num(observed), _num(baseline)
    if o is None or b is None:
        return None
    d = abs(o - b) / abs(b) if b != 0 else abs(o - b)
    return min(d, MAX_DEVIATION) if math.isfinite(d) else MAX_DEVIATION


@dataclass(frozen=True)
class EventNumbers:
    """What a recorded event lets us re-judge: its score and per-metric relative deviations."""

    score: float | None
    devs: dict[str, float | None] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.score is None and not self.devs

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "devs": self.devs}

    @classmethod
    def from_event(cls, ev: HasNumbers) -> EventNumbers:
        """An event's score and, per metric, ``|observed - baseline| / |baseline|`` (None when
        either is not recorded): a device engine event or a ``shared.records.Event``."""
        n = len(ev.metrics)
        base = ev.baseline if len(ev.baseline) == n else (None,) * n
        obs = ev.observed if len(ev.observed) == n else (None,) * n
        return cls(_num(ev.score), {str(m): rel_deviation(o, b) for m, b, o in zip(ev.metrics, base, obs, strict=True)})

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> EventNumbers:
        d = d or {}
        devs = d.get("devs") or {}
        return cls(_num(d.get("score")), {str(k): _num(v) for k, v in devs.items()})


@dataclass(frozen=True)
class AlertGate:
    """The alert gate of a detector config (see the module doc)."""

    min_score: float = 0.0
    metric_thresholds: Mapping[str, float] = field(default_factory=dict)
    default_metric_threshold: float = 0.0
    min_metrics: int = 1

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AlertGate:
        def pos(key: str, value: Any, hi: float | None = None) -> float:
            n = _num(value)
            if n is None or n < 0 or (hi is not None and n > hi):
                rng = f"in [0, {hi:g}]" if hi is not None else ">= 0"
                raise AlertGateError(f"detector config {key}: expected a number {rng}, found {value!r:.40}; "
                                  "fix the candidate's detector config")
            return n

        ms = pos("min_score", config.get("min_score", 0.0), 1.0)
        dm = pos("default_metric_threshold", config.get("default_metric_threshold", 0.0))
        mm = config.get("min_metrics", 1)
        if type(mm) is not int or mm < 1:
            raise AlertGateError(f"detector config min_metrics: expected an integer >= 1, found {mm!r:.40}")
        th = config.get("metric_thresholds", {}) or {}
        if not isinstance(th, Mapping):
            raise AlertGateError(f"detector config metric_thresholds: expected a table metric -> threshold, "
                              f"found {th!r:.60}")
        return cls(ms, {str(k): pos(f"metric_thresholds.{k}", v) for k, v in th.items()}, dm, mm)

    def to_config(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "metric_thresholds": dict(self.metric_thresholds),
                "default_metric_threshold": self.default_metric_threshold,
                "min_metrics": self.min_metrics}

    def threshold(self, metric: str) -> float:
        return self.metric_thresholds.get(metric, self.default_metric_threshold)

    def alerts(self, n: EventNumbers) -> bool:
        if n.empty:
            return False
        if n.score is not None and n.score < self.min_score:
            return False
        judged = {m: d for m, d in n.devs.items() if d is not None}
        if not judged:
            return True
        passing = sum(1 for m, d in judged.items() if d >= self.threshold(m))
        return passing >= min(self.min_metrics, len(judged))
