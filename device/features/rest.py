"""Rest and sleep periods from per-minute step counts (and activity labels when a classifier runs).

A minute is *at rest*, the quiet minute of Mishra et al. 2020 in which the resting heart rate is
read, when steps were recorded for it and for each of the ``quiet_minutes - 1`` minutes before it,
all of them zero, unless the activity classifier (when one runs) called it active (``eat``,
``play``, ...: the heart beats faster while chewing a toy lying down).

Rest *periods* are actigraphy and look at the steps alone: a minute is *still* when its step count
is zero and at least ``quiet_minutes`` recorded zero-step minutes (itself included) have passed
since the last step, across at most ``max_missing`` minutes in a row without a step count (a lost
frame neither proves a step nor ends a night; a longer silence does: the device cannot tell rest
from not worn). A rest period is a run of still minutes with only such short silences between
them; its ``minutes`` count the still ones. One of at least ``sleep_minutes`` (an hour by default),
or with a minute the classifier called ``sleep``, is *sleep*. A classifier's stray label does not
cut a night in two.

:func:`rest_flags` and :func:`rest_periods` work on a whole recording (replay, tests);
:class:`RestTracker` gives the same answers minute by minute on the device, and the trailing rest
hours per day (the share of the last 24 h's recorded minutes that were still, times 24) that the
collar can score as its ``rest`` metric: more rest than this individual's usual is the lethargy of
a sick or injured animal. As a share it needs no full window: the first hours and a collar taken
off for a while do not read as "little rest".

>>> t = 60.0 * np.arange(20)
>>> steps = np.zeros(20); steps[0] = 30                # a walk in minute 0, then still
>>> rest_flags(t, steps, quiet_minutes=12).nonzero()[0].tolist()
[12, 13, 14, 15, 16, 17, 18, 19]
>>> [(p.start_ts, p.minutes, p.sleep) for p in rest_periods(t, steps, quiet_minutes=12)]
[(720.0, 8, False)]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from device.features.resting_hr import FeatureInputError

REST_LABELS = ("rest", "sleep", None)  # None: no classifier ran, the steps decide
QUIET_MINUTES = 12
SLEEP_MINUTES = 60
MAX_MISSING = 5  # minutes in a row without a step count that a rest period survives
REST_WINDOW_S = 86400.0


@dataclass(frozen=True)
class RestPeriod:
    """Still minutes from ``start_ts`` to before ``end_ts`` (minute starts, epoch seconds); ``minutes``
    counts the still ones (short silences without a step count inside are not counted)."""

    start_ts: float
    end_ts: float
    minutes: int
    sleep: bool  # at least ``sleep_minutes`` long, or the classifier saw sleep in it


def _check(quiet_minutes: int, sleep_minutes: int) -> None:
    if int(quiet_minutes) < 1 or int(sleep_minutes) < 1:
        raise FeatureInputError(
            f"quiet_minutes and sleep_minutes must be >= 1, found {quiet_minutes!r} and "
            f"{sleep_minutes!r}; use the defaults ({QUIET_MINUTES}, {SLEEP_MINUTES})"
        )


class RestTracker:
    """Minute by minute: is this minute at rest / still, which period ended, rest hours per day.

    Feed minutes in time order (``add``); a minute at or before the previous one is ignored and
    returns ``False`` (the agent's minute windows are already ordered).
    """

    def __init__(self, quiet_minutes: int = QUIET_MINUTES, sleep_minutes: int = SLEEP_MINUTES,
                 window_s: float = REST_WINDOW_S, max_missing: int = MAX_MISSING) -> None:
        _check(quiet_minutes, sleep_minutes)
        if int(max_missing) < 0:
            raise FeatureInputError(f"max_missing must be >= 0, found {max_missing!r}")
        self.quiet_minutes = int(quiet_minutes)
        self.sleep_minutes = int(sleep_minutes)
        self.max_missing = int(max_missing)
        self.window_s = float(window_s)
        self._last_min: int | None = None
        self._zero_run = 0  # consecutive recorded zero-step minutes ending at the last minute
        self._still_run = 0  # recorded zero-step minutes since the last step (short silences ok)
        self._missing = 0  # minutes without a step count since the last recorded one
        self._period: list[float] | None = None  # [start_ts, last_ts, minutes, labelled sleep]
        self._win: deque[tuple[float, bool]] = deque()  # recorded minutes in the trailing window
        self._win_rest = 0  # of which still
        self.still = False  # the last minute was still
        self.closed: list[RestPeriod] = []  # periods ended by the last ``add`` (0 or 1)

    def add(self, minute_ts: float, steps: float | None, label: str | None = None) -> bool:
        """Account one minute; True if it is at rest (a resting-HR minute). ``still`` says whether
        it was still, ``closed`` holds the rest period it ended (if any)."""
        self.closed = []
        self.still = False
        if not math.isfinite(minute_ts):
            return False
        m = int(math.floor(minute_ts / 60.0))
        if self._last_min is not None and m <= self._last_min:
            return False
        absent = m - self._last_min - 1 if self._last_min is not None else self.max_missing + 1
        self._last_min = m
        recorded = steps is not None and math.isfinite(steps)
        self._missing += absent + (0 if recorded else 1)
        if self._missing > self.max_missing:  # silent too long: not known to be still
            self._still_run = 0
            self._close()
        if recorded and steps == 0:
            self._zero_run = self._zero_run + 1 if absent == 0 else 1
            self._still_run += 1
        elif recorded:
            self._zero_run = self._still_run = 0
        else:
            self._zero_run = 0
        ts = m * 60.0
        if recorded:
            self._missing = 0
            still = self.still = self._still_run >= self.quiet_minutes
            p = self._period
            if still and p is None:
                self._period = [ts, ts, 1.0, float(label == "sleep")]
            elif still and p is not None:
                p[1], p[2] = ts, p[2] + 1.0
                p[3] = max(p[3], float(label == "sleep"))
            else:
                self._close()
            self._win.append((ts, still))
            self._win_rest += still
        while self._win and self._win[0][0] <= ts - self.window_s:
            self._win_rest -= self._win.popleft()[1]
        return self._zero_run >= self.quiet_minutes and label in REST_LABELS

    def _close(self) -> None:
        p = self._period
        if p is not None:
            minutes = int(p[2])
            self.closed = [RestPeriod(p[0], p[1] + 60.0, minutes,
                                      minutes >= self.sleep_minutes or p[3] > 0.0)]
        self._period = None

    def finish(self) -> list[RestPeriod]:
        """Close an open period (end of a recording); returns it in a list (or [])."""
        self.closed = []
        self._close()
        return self.closed

    @property
    def current_minutes(self) -> int:
        """Length of the rest period in progress (0 if none)."""
        return 0 if self._period is None else int(self._period[2])

    def rest_hours(self) -> float:
        """Hours still per 24 h over the trailing window's recorded minutes (NaN if none)."""
        return 24.0 * self._win_rest / len(self._win) if self._win else math.nan


def _minutes(ts: object, steps: object, labels: Sequence[str | None] | None
             ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    t = np.asarray(ts, dtype=np.float64).ravel()
    s = np.asarray(steps, dtype=np.float64).ravel()
    if t.shape != s.shape or (labels is not None and len(labels) != len(t)):
        raise FeatureInputError(
            f"rest: timestamps ({t.shape[0]}), steps ({s.shape[0]}) and labels "
            f"({'none' if labels is None else len(labels)}) must have the same length; pass one "
            "step count (and label) per minute"
        )
    if len(t) > 1 and np.any(np.diff(t[np.isfinite(t)]) <= 0):
        raise FeatureInputError("rest: timestamps must be increasing minute starts; sort them "
                                "and drop repeated minutes first")
    return t, s, list(labels) if labels is not None else [None] * len(t)


def rest_flags(ts: object, steps: object, labels: Sequence[str | None] | None = None,
               quiet_minutes: int = QUIET_MINUTES) -> np.ndarray:
    """Per-minute rest flags (resting-HR minutes) of a whole recording; NaN steps = not recorded."""
    t, s, lab = _minutes(ts, steps, labels)
    tr = RestTracker(quiet_minutes)
    return np.array([tr.add(float(a), None if not np.isfinite(b) else float(b), c)
                     for a, b, c in zip(t, s, lab, strict=True)], dtype=bool)


def still_flags(ts: object, steps: object, quiet_minutes: int = QUIET_MINUTES,
                max_missing: int = MAX_MISSING) -> np.ndarray:
    """Per-minute still flags (the minutes rest periods and rest hours count) of a recording."""
    t, s, _ = _minutes(ts, steps, None)
    tr = RestTracker(quiet_minutes, max_missing=max_missing)
    out = np.zeros(len(t), dtype=bool)
    for i, (a, b) in enumerate(zip(t, s, strict=True)):
        tr.add(float(a), None if not np.isfinite(b) else float(b))
        out[i] = tr.still
    return out


def rest_periods(ts: object, steps: object, labels: Sequence[str | None] | None = None,
                 quiet_minutes: int = QUIET_MINUTES, sleep_minutes: int = SLEEP_MINUTES
                 ) -> list[RestPeriod]:
    """Every rest period of a recording, in time order (the last one closed at the end)."""
    t, s, lab = _minutes(ts, steps, labels)
    tr = RestTracker(quiet_minutes, sleep_minutes)
    out: list[RestPeriod] = []
    for a, b, c in zip(t, s, lab, strict=True):
        tr.add(float(a), None if not np.isfinite(b) else float(b), c)
        out += tr.closed
    return out + tr.finish()
