"""Turn minute windows into the metric vector the engine scores, per device kind."""

from __future__ import annotations

import math
from collections import deque

from device.features.minute import MinuteWindow
from device.features.rest import RestTracker

COLLAR_METRICS = ("heart_rate", "resting_hr", "activity", "skin_temp")
COLLAR_DIRECTIONS = {"heart_rate": 1, "resting_hr": 1, "activity": -1, "skin_temp": 1}
REST_METRIC = "rest"  # scored only with ``score_rest`` (AgentConfig.score_rest)
PERCEPTION_METRICS = ("confidence", "brightness", "objects", "novel", "scene_change")
PERCEPTION_DIRECTIONS = {"confidence": -1, "brightness": 0, "objects": 0, "novel": 1, "scene_change": -1}


class CollarMetrics:
    """heart_rate (minute mean), resting_hr (Mishra et al. 2020: heart rate in the rest minutes of
    :mod:`device.features.rest`: zero steps over the preceding ``quiet_minutes``, no movement
    class), activity (steps per minute,
    mean over the trailing ``window_s``, a day by default: daily activity, which a walk's timing does
    not move but an injury does; 1 h and 12 h windows missed the simulated injury), skin_temp (the
    latest skin temperature reading if it is at most ``temp_hold_s`` old, else NaN: the collar reads
    it every 5 minutes and holding it gives it a row every minute like the other metrics, so its
    persistence grows at the same pace; fever and heat stress raise it, a fretting or excited
    animal does not, so it tells those apart), and with ``score_rest`` a fifth, rest (hours at
    rest per 24 h over the trailing day, :meth:`RestTracker.rest_hours`: a sick or injured animal
    rests more; off by default, see AgentConfig.score_rest). Rest periods are tracked either way:
    ``resting`` says whether the last minute was at rest, ``rest.closed`` holds a rest period it
    ended (the daily summary's rest and sleep)."""

    def __init__(self, quiet_minutes: int = 12, window_s: float = 86400.0,
                 temp_hold_s: float = 600.0, score_rest: bool = False) -> None:
        self.score_rest = score_rest
        self.metrics: tuple[str, ...] = COLLAR_METRICS + ((REST_METRIC,) if score_rest else ())
        self.directions = {**COLLAR_DIRECTIONS, **({REST_METRIC: 1} if score_rest else {})}
        self.window_s = window_s
        self.temp_hold_s = temp_hold_s
        self._temp = (-math.inf, math.nan)
        self.rest = RestTracker(quiet_minutes)
        self.resting = False  # the last minute was at rest
        self._hour: deque[tuple[float, int]] = deque()
        self._hour_sum = 0

    def vector(self, w: MinuteWindow, label: str | None) -> list[float]:
        steps = w.steps
        self.resting = self.rest.add(w.minute_ts, steps, label)
        if steps is not None:
            self._hour.append((w.minute_ts, steps))
            self._hour_sum += steps
        while self._hour and self._hour[0][0] <= w.minute_ts - self.window_s:
            self._hour_sum -= self._hour.popleft()[1]
        hr = w.heart_rate
        rhr = hr if self.resting else math.nan
        activity = self._hour_sum / max(len(self._hour), 1) if self._hour else math.nan
        if math.isfinite(w.temp):
            self._temp = (w.minute_ts, w.temp)
        temp = self._temp[1] if w.minute_ts - self._temp[0] <= self.temp_hold_s else math.nan
        vec = [hr, rhr, activity, temp]
        if self.score_rest:
            vec.append(self.rest.rest_hours())
        return vec


class PerceptionMetrics:
    """Mean detection confidence, scene brightness, objects per frame, 'novel' (1 when a class
    never seen during the first ``learn_days`` at this site shows up in the minute) and
    'scene_change' (absolute change of brightness plus object count since the previous minute:
    a frozen camera repeats one frame and drives it to zero)."""

    metrics = PERCEPTION_METRICS
    directions = PERCEPTION_DIRECTIONS

    def __init__(self, learn_days: float = 3.0) -> None:
        self.learn_s = learn_days * 86400.0
        self._first: float | None = None
        self.seen: set[int] = set()
        self._prev: tuple[float, float] | None = None

    def vector(self, w: MinuteWindow, label: str | None = None) -> list[float]:
        if w.det_n == 0:
            return [math.nan] * len(self.metrics)
        if self._first is None:
            self._first = w.minute_ts
        learning = w.minute_ts - self._first < self.learn_s
        novel = 0.0
        if learning:
            self.seen |= w.det_classes
        elif w.det_classes - self.seen:
            novel = 1.0
        n = w.det_n
        bright, objects = w.det_bright / n, w.det_objects / n
        change = math.nan if self._prev is None else abs(bright - self._prev[0]) + abs(objects - self._prev[1])
        self._prev = (bright, objects)
        return [w.det_conf / n, bright, objects, novel, change]
