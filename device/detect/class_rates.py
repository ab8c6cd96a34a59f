"""Per camera, per class, by hour of day: how many objects this camera sees, and what is far off.

A camera's baseline is, for each class and each hour of the day, the rate of objects per minute
it has seen (a gate camera sees people at 8:00, rarely at 3:00). Each minute with detections is
compared with it over a trailing window, as Poisson counts:

- ``novel_class:<label>``: a class never seen at this camera during learning shows up in at least
  ``novel_min_minutes`` minutes of the window;
- ``class_rate:<label>``: a known class far above its hour-of-day rate (the upper tail
  P(X >= observed | expected) below ``alpha``): a person at 3:00 at a camera that sees none at
  night is a finding, the same count at 8:00 is not;
- ``scene_change``: a class the camera sees reliably at this hour is far below its rate (the lower
  tail below ``alpha`` with at least ``absent_min_expected`` expected): the camera was moved or
  its view changed.

Pure computation: no I/O, no clock; the state is a plain dict (saved with the agent's engine).
Minutes without detections (a frozen or silent camera) are not observations: they teach nothing
and count for nothing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.records import Direction, Event, Severity

HOURS = 24
FindingKind = Literal["sustained", "novel", "health"]


@dataclass(frozen=True)
class Finding:
    """Something a perception or health check found; the agent turns it into an event record."""

    kind: FindingKind
    what: str  # "novel_class:deer", "class_rate:person", "scene_change", "frozen", "dropout", ...
    start_ts: float  # when it began (first minute that shows it)
    ts: float  # when it was decided
    observed: float
    expected: float
    score: float  # in [0, 1]
    severity: Literal["info", "warning", "critical"] = "warning"
    direction: Direction = 1  # above (+1) or below (-1) what was expected

    def event(self, model_version: str = "unknown", detector_version: str = "unknown") -> Event:
        """The event record that carries this finding (one metric: ``what``)."""
        return Event(start_ts=self.start_ts, ts=self.ts, metrics=(self.what,), directions=(self.direction,),
                     score=self.score, severity=Severity(self.severity), kind=self.kind,
                     baseline=(self.expected,), observed=(self.observed,), model_version=model_version,
                     detector_version=detector_version)


def poisson_upper(k: int, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu)."""
    if k <= 0:
        return 1.0
    if mu <= 0.0:
        return 0.0
    if k <= mu:  # the tail holds most of the mass: 1 - P(X <= k-1)
        return max(0.0, 1.0 - poisson_lower(k - 1, mu))
    log_term = -mu + k * math.log(mu) - math.lgamma(k + 1)
    term, total, i = math.exp(log_term), 0.0, k
    while term > 1e-300 and (total == 0.0 or term > total * 1e-16):
        total += term
        i += 1
        term *= mu / i
    return min(1.0, total)


def poisson_lower(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu)."""
    if k < 0:
        return 0.0
    if mu <= 0.0:
        return 1.0
    if k >= mu:  # the body holds most of the mass
        return max(0.0, 1.0 - poisson_upper(k + 1, mu))
    # from k downwards: each term is i/mu of the one above, so the sum converges fast
    term = math.exp(-mu + k * math.log(mu) - math.lgamma(k + 1))
    total, i = 0.0, k
    while i >= 0 and term > 1e-300:
        total += term
        if term < total * 1e-16:
            break
        term *= i / mu
        i -= 1
    return min(1.0, total)


class Window:
    """A trailing window of minutes with running sums: objects per label, minutes per hour."""

    def __init__(self, minutes: int) -> None:
        self.span = minutes * 60.0
        self.rows: deque[tuple[float, int, dict[str, int]]] = deque()
        self.seen: dict[str, int] = {}
        self.hours: dict[int, int] = {}

    def push(self, ts: float, hour: int, objects: dict[str, int]) -> None:
        self.rows.append((ts, hour, objects))
        self._add(hour, objects, 1)
        while self.rows[0][0] <= ts - self.span:
            _, h, objs = self.rows.popleft()
            self._add(h, objs, -1)

    def _add(self, hour: int, objects: dict[str, int], sign: int) -> None:
        self.hours[hour] = self.hours.get(hour, 0) + sign
        for lab, n in objects.items():
            self.seen[lab] = self.seen.get(lab, 0) + sign * n

    def expected(self, table: list[float]) -> float:
        return sum(n * table[h] for h, n in self.hours.items() if n)

    def clear(self) -> None:
        self.rows.clear()
        self.seen.clear()
        self.hours.clear()


def _score(p: float, alpha: float) -> float:
    """A tail probability as evidence in [0, 1]: 0.5 at ``alpha``, 1 at 1e-6 x alpha."""
    if p <= 0.0:
        return 1.0
    s = 0.5 + 0.5 * (math.log10(alpha) - math.log10(p)) / 6.0
    return round(min(1.0, max(0.0, s)), 3)


@dataclass
class ClassRates:
    """One camera's class baselines by hour of day and the checks against them."""

    learn_days: float = 3.0
    window_minutes: int = 30  # novel classes and rates above: a trailing half hour
    absent_window_minutes: int = 90  # rates below (scene change): a longer window
    alpha: float = 1e-6
    novel_min_minutes: int = 3
    rate_min_count: int = 3
    absent_min_expected: float = 15.0
    prior_minutes: float = 5.0  # an hour's rate leans on the class's all-day rate for this many minutes
    tz_offset_h: float = 0.0  # hours of day in the camera's local time
    rearm_minutes: float = 120.0  # a finding closed this recently is not raised again
    first_ts: float | None = None
    counts: dict[str, list[float]] = field(default_factory=dict)  # label -> 24 hourly object counts
    minutes: list[float] = field(default_factory=lambda: [0.0] * HOURS)  # observed minutes per hour
    _short: Window = field(init=False)
    _long: Window = field(init=False)
    _open: dict[str, float] = field(default_factory=dict)  # finding key -> episode start
    _closed: dict[str, float] = field(default_factory=dict)  # finding key -> when its episode ended
    _table: dict[str, list[float]] = field(default_factory=dict)  # rates by hour, rebuilt hourly
    _table_ts: float = -math.inf

    def __post_init__(self) -> None:
        self._short, self._long = Window(self.window_minutes), Window(self.absent_window_minutes)

    def hour(self, ts: float) -> int:
        return int(((ts / 3600.0) + self.tz_offset_h) // 1) % HOURS

    def learning(self, ts: float) -> bool:
        return self.first_ts is None or ts - self.first_ts < self.learn_days * 86400.0

    def rate(self, label: str, hour: int) -> float:
        """Objects per minute of ``label`` at this hour of day, shrunk towards its all-day rate
        for ``prior_minutes`` (an hour the camera has hardly watched says little)."""
        return self.rates(label)[hour]

    def rates(self, label: str) -> list[float]:
        c = self.counts.get(label)
        if c is None:
            return [0.0] * HOURS
        total_min = sum(self.minutes)
        prior = self.prior_minutes * (sum(c) / total_min if total_min else 0.0)
        return [(c[h] + prior) / (self.minutes[h] + self.prior_minutes) for h in range(HOURS)]

    def update(self, ts: float, objects: Mapping[str, int]) -> list[Finding]:
        """One minute with detections (label -> objects); returns what it completes."""
        if self.first_ts is None:
            self.first_ts = ts
        h = self.hour(ts)
        if self.learning(ts):
            self._learn(h, objects)
            return []
        objs = {k: n for k, n in objects.items() if n > 0}
        self._short.push(ts, h, objs)
        self._long.push(ts, h, objs)
        if ts - self._table_ts >= 3600.0 or set(self._table) != set(self.counts):  # rates move slowly
            self._table, self._table_ts = {lab: self.rates(lab) for lab in self.counts}, ts
        found = self._novel(ts) + self._above(ts) + self._below(ts)
        if any(f.what == "scene_change" for f in found):
            self._relearn(ts)  # the camera sees another scene now: its rates are learnt again
            return found
        if not self._open:  # quiet minutes keep the baseline current; new classes stay novel
            self._learn(h, {k: n for k, n in objects.items() if k in self.counts})
        return found

    def _learn(self, h: int, objects: Mapping[str, int]) -> None:
        self.minutes[h] += 1.0
        for label, n in objects.items():
            if n > 0:
                self.counts.setdefault(label, [0.0] * HOURS)[h] += float(n)

    def _relearn(self, ts: float) -> None:
        self.first_ts, self.counts, self.minutes = ts, {}, [0.0] * HOURS
        self._short.clear()
        self._long.clear()
        self._open.clear()
        self._table, self._table_ts = {}, -math.inf

    def _episode(self, key: str, active: bool, start: float, ts: float) -> bool:
        """True when an episode of ``key`` starts now: a finding is raised once per episode, and
        not again within ``rearm_minutes`` of the last one's end."""
        if not active or key in self._open:
            return False
        if ts - self._closed.get(key, -math.inf) < self.rearm_minutes * 60.0:
            return False
        self._open[key] = start
        return True

    def _close(self, key: str, ts: float) -> None:
        if self._open.pop(key, None) is not None:
            self._closed[key] = ts

    def _novel(self, ts: float) -> list[Finding]:
        win = self._short
        labels = {lab for lab, n in win.seen.items() if n > 0 and lab not in self.counts}
        out = []
        for lab in sorted(labels):
            minutes = [t for t, _, objs in win.rows if objs.get(lab, 0) > 0]
            if self._episode(f"novel_class:{lab}", len(minutes) >= self.novel_min_minutes, minutes[0], ts):
                out.append(Finding("novel", f"novel_class:{lab}", minutes[0], ts, float(win.seen[lab]), 0.0, 1.0))
        for key in [k for k in self._open if k.startswith("novel_class:")]:
            if key.split(":", 1)[1] not in labels:
                self._close(key, ts)
        return out

    def _above(self, ts: float) -> list[Finding]:
        win = self._short
        out = []
        for lab in sorted(self.counts):
            observed = win.seen.get(lab, 0)
            if observed < self.rate_min_count:
                self._close(f"class_rate:{lab}", ts)
                continue
            expected = win.expected(self._table[lab])
            p = 1.0 if observed <= expected else poisson_upper(observed, expected)  # at or below: no tail to score
            if self._episode(f"class_rate:{lab}", p < self.alpha, ts, ts):
                first = next((t for t, _, objs in win.rows if objs.get(lab, 0) > 0), ts)
                self._open[f"class_rate:{lab}"] = first
                out.append(Finding("novel", f"class_rate:{lab}", first, ts, float(observed), round(expected, 3),
                                   _score(p, self.alpha)))
            elif p > 0.01:
                self._close(f"class_rate:{lab}", ts)
        return out

    def _below(self, ts: float) -> list[Finding]:
        win = self._long
        if len(win.rows) < self.absent_window_minutes // 2:  # too few observed minutes to say anything
            return []
        worst: tuple[float, str, int, float] | None = None
        for lab in sorted(self.counts):
            expected = win.expected(self._table[lab])
            if expected < self.absent_min_expected:
                continue
            observed = win.seen.get(lab, 0)
            p = 1.0 if observed >= expected else poisson_lower(observed, expected)
            if worst is None or p < worst[0]:
                worst = (p, lab, observed, expected)
        if worst is None:
            return []
        p, lab, observed, expected = worst
        start = win.rows[0][0]
        if self._episode("scene_change", p < self.alpha, start, ts):
            return [Finding("novel", "scene_change", start, ts, float(observed), round(expected, 3),
                            _score(p, self.alpha), direction=-1)]
        if p > 0.01:
            self._close("scene_change", ts)
        return []

    # ---- state ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"first_ts": self.first_ts, "counts": self.counts, "minutes": self.minutes}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore learnt rates (a bad or foreign state raises ValueError naming it)."""
        try:
            minutes = [float(x) for x in state["minutes"]]
            counts = {str(k): [float(x) for x in v] for k, v in dict(state["counts"]).items()}
            first = state.get("first_ts")
            first_ts = None if first is None else float(first)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"class rates state unreadable: {exc}") from None
        if len(minutes) != HOURS or any(len(v) != HOURS for v in counts.values()):
            raise ValueError(f"class rates state unreadable: expected {HOURS} hourly values per class")
        self.first_ts, self.counts, self.minutes = first_ts, counts, minutes
