"""Rest and sleep periods (device/features/rest.py) against a plain-Python reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.features.metrics import CollarMetrics
from device.features.minute import MinuteWindow
from device.features.rest import (
    RestPeriod,
    RestTracker,
    rest_flags,
    rest_periods,
)
from device.features.resting_hr import FeatureInputError, resting_hr

T0 = 1_700_000_040.0  # a minute start


def naive(minutes: list[int], steps: list[float], labels: list[str | None], quiet: int,
          sleep_minutes: int, window_min: int) -> tuple[list[bool], list[tuple[int, int, bool]],
                                                       list[float]]:
    """Rest flags, periods (first minute, minutes, sleep) and rest hours, by definition."""
    at = {m: i for i, m in enumerate(minutes)}
    flags = []
    for i, m in enumerate(minutes):
        ok = labels[i] in ("rest", "sleep", None)
        for k in range(quiet):
            j = at.get(m - k)
            if j is None or math.isnan(steps[j]) or steps[j] != 0:
                ok = False
        flags.append(ok)
    periods: list[tuple[int, int, bool]] = []
    run: list[int] = []
    for i, m in enumerate(minutes):
        if flags[i] and run and minutes[run[-1]] == m - 1:
            run.append(i)
            continue
        if run:
            periods.append((minutes[run[0]], len(run),
                            len(run) >= sleep_minutes or any(labels[j] == "sleep" for j in run)))
        run = [i] if flags[i] else []
    if run:
        periods.append((minutes[run[0]], len(run),
                        len(run) >= sleep_minutes or any(labels[j] == "sleep" for j in run)))
    hours = []
    for i, m in enumerate(minutes):
        rec = [j for j in range(i + 1) if minutes[j] > m - window_min and not math.isnan(steps[j])]
        hours.append(24.0 * sum(flags[j] for j in rec) / len(rec) if rec else math.nan)
    return flags, periods, hours


minute_streams = st.lists(
    st.tuples(
        st.integers(1, 4),  # minutes since the previous one (gaps)
        st.one_of(st.just(0.0), st.just(0.0), st.just(0.0), st.just(float("nan")),
                  st.integers(1, 150).map(float)),
        st.sampled_from([None, None, None, "rest", "sleep", "walk"]),
    ),
    min_size=1, max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(minute_streams, st.integers(1, 6), st.integers(1, 10), st.integers(5, 60))
def test_tracker_matches_definition(stream: list, quiet: int, sleep_minutes: int, window_min: int
                                    ) -> None:
    minutes, m = [], 0
    for gap, _, _ in stream:
        m += gap
        minutes.append(m)
    steps = [s for _, s, _ in stream]
    labels = [lab for _, _, lab in stream]
    want_flags, want_periods, want_hours = naive(minutes, steps, labels, quiet, sleep_minutes,
                                                 window_min)
    tr = RestTracker(quiet, sleep_minutes, window_s=window_min * 60.0)
    got_flags, got_periods, got_hours = [], [], []
    for mi, s, lab in zip(minutes, steps, labels, strict=True):
        got_flags.append(tr.add(T0 + 60.0 * mi, None if math.isnan(s) else s, lab))
        got_periods += tr.closed
        got_hours.append(tr.rest_hours())
    got_periods += tr.finish()
    assert got_flags == want_flags
    assert [(round((p.start_ts - T0) / 60.0), p.minutes, p.sleep) for p in got_periods] == want_periods
    assert all(p.end_ts == p.start_ts + 60.0 * p.minutes for p in got_periods)
    np.testing.assert_allclose(got_hours, want_hours, equal_nan=True)
    ts = T0 + 60.0 * np.asarray(minutes, dtype=np.float64)
    assert rest_flags(ts, steps, labels, quiet).tolist() == want_flags
    assert rest_periods(ts, steps, labels, quiet, sleep_minutes) == got_periods


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.just(0.0), st.integers(1, 90).map(float)),
                min_size=1, max_size=200), st.integers(1, 15))
def test_rest_minutes_are_the_resting_hr_minutes(steps: list[float], quiet: int) -> None:
    """One definition of rest: the minutes resting HR is read in (the Numba kernel) are at rest."""
    ts = T0 + 60.0 * np.arange(len(steps))
    t_rhr, _ = resting_hr(ts + 30.0, np.full(len(steps), 60.0), ts, np.asarray(steps), quiet)
    assert (ts[rest_flags(ts, steps, quiet_minutes=quiet)]).tolist() == t_rhr.tolist()


def test_a_night_of_sleep_and_short_naps() -> None:
    steps = np.full(24 * 60, 40.0)  # active all day ...
    steps[60:60 + 8 * 60] = 0  # ... but 01:00-09:00 still
    steps[14 * 60:14 * 60 + 30] = 0  # and a 30-minute nap at 14:00
    ts = T0 + 60.0 * np.arange(len(steps))
    periods = rest_periods(ts, steps)
    assert [(p.minutes, p.sleep) for p in periods] == [(8 * 60 - 11, True), (30 - 11, False)]
    assert periods[0].start_ts == ts[60 + 11]
    assert periods[0].end_ts == ts[60 + 8 * 60]
    tr = RestTracker()
    for t, s in zip(ts, steps, strict=True):
        tr.add(float(t), float(s))
    assert tr.rest_hours() == pytest.approx(24.0 * (8 * 60 - 11 + 30 - 11) / (24 * 60))


def test_classifier_labels_decide_and_name_sleep() -> None:
    ts = T0 + 60.0 * np.arange(40)
    steps = np.zeros(40)
    labels: list[str | None] = ["rest"] * 20 + ["walk"] + ["sleep"] * 19
    periods = rest_periods(ts, steps, labels, quiet_minutes=5)
    # minute 20 was called walking: it splits the stillness; the second run is sleep though short
    assert [(p.minutes, p.sleep) for p in periods] == [(16, False), (19, True)]


def test_missing_minutes_and_gaps_end_a_period() -> None:
    tr = RestTracker(quiet_minutes=2)
    assert [tr.add(T0 + 60.0 * m, 0.0) for m in range(4)] == [False, True, True, True]
    assert tr.current_minutes == 3
    assert tr.add(T0 + 60.0 * 4, None) is False  # no step count: not known to be at rest
    assert [p.minutes for p in tr.closed] == [3]
    assert tr.add(T0 + 60.0 * 5, 0.0) is False  # the quiet run starts again
    assert tr.add(T0 + 60.0 * 6, 0.0) is True
    assert tr.add(T0 + 60.0 * 9, 0.0) is False  # a 2-minute gap: the run starts again
    assert [p.minutes for p in tr.closed] == [1]


def test_repeated_or_older_minutes_are_ignored() -> None:
    tr = RestTracker(quiet_minutes=1)
    assert tr.add(T0 + 60.0, 0.0) is True
    assert tr.add(T0 + 60.0, 50.0) is False
    assert tr.add(T0, 50.0) is False
    assert tr.add(math.nan, 0.0) is False
    assert tr.current_minutes == 1 and tr.rest_hours() == 24.0


def test_bad_input_is_named() -> None:
    with pytest.raises(FeatureInputError, match="same length"):
        rest_flags([T0, T0 + 60.0], [0.0])
    with pytest.raises(FeatureInputError, match="increasing"):
        rest_periods([T0 + 60.0, T0], [0.0, 0.0])
    with pytest.raises(FeatureInputError, match="quiet_minutes"):
        RestTracker(quiet_minutes=0)
    assert math.isnan(RestTracker().rest_hours())
    assert rest_periods([], []) == []


def test_collar_reads_resting_hr_only_at_rest_and_scores_rest_hours() -> None:
    assert "rest" not in CollarMetrics().metrics, "rest is scored only when asked (score_rest)"
    cm = CollarMetrics(quiet_minutes=3, score_rest=True)
    assert cm.metrics[-1] == "rest" and cm.directions["rest"] == 1
    rows = []
    for m in range(10):
        w = MinuteWindow(T0 + 60.0 * m, hr_sum=70.0, hr_n=1, steps=30 if m < 2 else 0)
        rows.append(dict(zip(cm.metrics, cm.vector(w, None), strict=True)))
    assert [math.isnan(r["resting_hr"]) for r in rows] == [True] * 4 + [False] * 6
    assert rows[-1]["rest"] == pytest.approx(24.0 * 6 / 10)
    w = MinuteWindow(T0 + 600.0, hr_sum=70.0, hr_n=1, steps=0)
    assert math.isnan(dict(zip(cm.metrics, cm.vector(w, "walk"), strict=True))["resting_hr"])
    assert cm.rest.closed == [RestPeriod(T0 + 240.0, T0 + 600.0, 6, False)]
