"""What a clinician reads from a wearable each morning: last night and yesterday, one record.

A *night* is the window 00:00-06:59 (device clock) of a date; its record is complete at 07:00 of
that date, the morning it is named after. Per night:

* ``rhr``: overnight resting heart rate, the mean heart rate of the window's rest minutes (the
  resting-HR minute of :mod:`device.features.rest`: steps recorded and zero for 12 minutes), as
  NightSignal and Mishra et al. read it; NaN with fewer than ``min_rest_minutes`` of them;
* ``restless``: minutes of the window with steps (getting up, pacing: sleep disruption), counted
  over worn minutes (a minute with a heart-rate sample); NaN with fewer than ``min_worn_minutes``;
* ``steps``: the steps of the day before (00:00-23:59), whose drop is the other early sign; NaN
  when the device was worn fewer than ``min_worn_day_minutes`` of that day.

:func:`night_records` computes them for a recording (replay); :class:`NightlyTracker` gives the
same records minute by minute on a device (``tests/test_nightly.py`` checks that both agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device.features.rest import QUIET_MINUTES, RestTracker

__all__ = ["NIGHT_END_HOUR", "NightRecord", "NightlyTracker", "night_records"]

NIGHT_END_HOUR = 7  # the window is 00:00 .. NIGHT_END_HOUR:00; the record is read then
MIN_REST_MINUTES = 60  # a night's resting HR needs an hour of rest minutes
MIN_WORN_MINUTES = 180  # restlessness needs three worn hours in the window
MIN_WORN_DAY_MINUTES = 600  # a day's steps need ten worn hours
_DAY = 86400.0


@dataclass(frozen=True)
class NightRecord:
    """One night (the morning of ``day``, epoch day number; read at ``ts``)."""

    day: int  # days since 1970-01-01 (device clock)
    ts: float  # when the record is complete: 07:00 of that day (epoch seconds)
    rhr: float  # mean heart rate of the window's rest minutes (NaN: too few)
    rest_minutes: int
    restless: float  # minutes of the window with steps, over worn minutes (NaN: barely worn)
    steps: float  # steps of the day before (NaN: worn too little)


class NightlyTracker:
    """Minute by minute: ``add(minute_ts, heart_rate, steps)``; a finished night is returned by
    the call that passes 07:00 (or a later minute after a gap), at most one per call.

    Minutes must come in increasing order (the agent's minute windows do); NaN heart rate =
    not worn, None / NaN steps = not recorded.
    """

    def __init__(self, quiet_minutes: int = QUIET_MINUTES, min_rest_minutes: int = MIN_REST_MINUTES,
                 min_worn_minutes: int = MIN_WORN_MINUTES,
                 min_worn_day_minutes: int = MIN_WORN_DAY_MINUTES) -> None:  # fmt: skip
        self.rest = RestTracker(quiet_minutes)
        self.min_rest = min_rest_minutes
        self.min_worn = min_worn_minutes
        self.min_worn_day = min_worn_day_minutes
        self._day: int | None = None  # the calendar day of the minutes being accumulated
        self._night: tuple[float, int, int, int] = (0.0, 0, 0, 0)  # hr sum, rest, restless, worn
        self._closed = False  # the current day's night record was emitted
        self._today: tuple[float, int] = (0.0, 0)  # steps, worn minutes of the current day
        self._yesterday: tuple[float, int] = (0.0, 0)
        self._last_min: int | None = None

    def _record(self, day: int) -> NightRecord:
        hr_sum, rest, restless, worn = self._night
        steps, worn_day = self._yesterday
        return NightRecord(
            day=day, ts=day * _DAY + NIGHT_END_HOUR * 3600.0,
            rhr=hr_sum / rest if rest >= self.min_rest else math.nan, rest_minutes=rest,
            restless=float(restless) if worn >= self.min_worn else math.nan,
            steps=steps if worn_day >= self.min_worn_day else math.nan,
        )  # fmt: skip

    def _new_day(self, day: int) -> None:
        gap = self._day is not None and day != self._day + 1
        self._yesterday = (0.0, 0) if gap else self._today
        self._today = (0.0, 0)
        self._night = (0.0, 0, 0, 0)
        self._closed = False
        self._day = day

    def add(self, minute_ts: float, heart_rate: float, steps: float | None) -> NightRecord | None:
        """Add one minute; returns a night record when this minute completes one."""
        m = math.floor(minute_ts / 60.0)
        if self._last_min is not None and m <= self._last_min:
            return None  # repeated or out of order: ignored
        self._last_min = m
        day, minute_of_day = divmod(m, 1440)
        out = None
        if self._day is not None and day != self._day and not self._closed:
            out = self._record(self._day)  # a gap across 07:00: close the last night seen
        if day != self._day:
            self._new_day(day)
        st = None if steps is None or not math.isfinite(steps) else float(steps)
        rest = self.rest.add(m * 60.0, st)
        worn = math.isfinite(heart_rate)
        if minute_of_day < NIGHT_END_HOUR * 60:
            hr_sum, n_rest, restless, n_worn = self._night
            if worn:
                n_worn += 1
                restless += 1 if (st or 0.0) > 0.0 else 0
                if rest:
                    hr_sum += heart_rate
                    n_rest += 1
            self._night = (hr_sum, n_rest, restless, n_worn)
        elif not self._closed:
            self._closed = True
            out = self._record(day)
        if worn:
            self._today = (self._today[0] + (st or 0.0), self._today[1] + 1)
        return out


def night_records(ts_hr: np.ndarray, hr: np.ndarray, ts_steps: np.ndarray, steps: np.ndarray,
                  **kwargs: int) -> list[NightRecord]:  # fmt: skip
    """Night records of a recording: heart-rate samples (any rate) and minute step counts, epoch
    seconds of the device clock. Heart rate is averaged per minute first."""
    t_h = np.asarray(ts_hr, dtype=np.float64)
    h = np.asarray(hr, dtype=np.float64)
    ok = np.isfinite(t_h) & np.isfinite(h)
    hm = np.floor(t_h[ok] / 60.0).astype(np.int64)
    t_s = np.asarray(ts_steps, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)
    oks = np.isfinite(t_s)
    sm = np.floor(t_s[oks] / 60.0).astype(np.int64)
    both = np.concatenate([hm, sm])
    if both.size == 0:
        return []
    lo, hi = int(both.min()), int(both.max())
    n = hi - lo + 1
    cnt = np.bincount(hm - lo, minlength=n)
    hr_min = np.full(n, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        hr_min[cnt > 0] = (np.bincount(hm - lo, weights=h[ok], minlength=n) / cnt)[cnt > 0]
    st_min = np.full(n, np.nan)
    st_min[sm - lo] = s[oks]  # the last count of a minute wins
    tr = NightlyTracker(**kwargs)
    out = []
    for i in range(n):
        rec = tr.add((lo + i) * 60.0, float(hr_min[i]), float(st_min[i]))
        if rec is not None:
            out.append(rec)
    return out
