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
    MAX_MISSING,
    RestPeriod,
    RestTracker,
    rest_flags,
    rest_periods,
    still_flags,
)
from device.features.resting_hr import FeatureInputError, resting_hr

T0 = 1_700_000_040.0  # a minute start


def naive(minutes: list[int], steps: list[float], labels: list[str | None], quiet: int,
          sleep_minutes: int, window_min: int, max_missing: int
          ) -> tuple[list[bool], list[bool], list[tuple[int, int, int, bool]], list[float]]:
    """Rest flags, still flags, periods (first minute, end minute, still minutes, sleep) and rest
    hours, by definition."""
    rec = {m: s for m, s in zip(minutes, steps, strict=True) if not math.isnan(s)}
    at = {m: i for i, m in enumerate(minutes)}
    flags, still = [], []
    for i, m in enumerate(minutes):
        # at rest: this and the quiet - 1 minutes before recorded, all zero; no active label
        flags.append(all(rec.get(m - k) == 0 for k in range(quiet))
                     and labels[i] in ("rest", "sleep", None))
        # still: zero, and >= quiet recorded zeros since the last step, silences <= max_missing
        zeros, silent, k = 0, 0, m
        while rec.get(m) == 0 and silent <= max_missing and k >= minutes[0] - max_missing - 1:
            if k in rec:
                if rec[k] != 0:
                    break
                zeros, silent = zeros + 1, 0
            else:
                silent += 1
            k -= 1
        still.append(rec.get(m) == 0 and zeros >= quiet)
    periods: list[tuple[int, int, int, bool]] = []
    run: list[int] = []  # still minutes (values) of the open period

    def close() -> None:
        if run:
            sleep = len(run) >= sleep_minutes or any(labels[at[x]] == "sleep" for x in run)
            periods.append((run[0], run[-1] + 1, len(run), sleep))

    for i, m in enumerate(minutes):
        if not still[i]:
            continue
        between = [x for x in minutes if run and run[-1] < x < m]
        if run and m - run[-1] - 1 <= max_missing and all(x not in rec for x in between):
            run.append(m)
        else:
            close()
            run = [m]
    close()
    hours = []
    for i, m in enumerate(minutes):
        win = [j for j in range(i + 1) if minutes[j] > m - window_min and minutes[j] in rec]
        hours.append(24.0 * sum(still[j] for j in win) / len(win) if win else math.nan)
    return flags, still, periods, hours


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
@given(minute_streams, st.integers(1, 6), st.integers(1, 10), st.integers(5, 60), st.integers(0, 4))
def test_tracker_matches_definition(stream: list, quiet: int, sleep_minutes: int, window_min: int,
                                    max_missing: int) -> None:
    minutes, m = [], 0
    for gap, _, _ in stream:
        m += gap
        minutes.append(m)
    steps = [s for _, s, _ in stream]
    labels = [lab for _, _, lab in stream]
    want_flags, want_still, want_periods, want_hours = naive(minutes, steps, labels, quiet, sleep_minutes,
                                                 window_min, max_missing)
    tr = RestTracker(quiet, sleep_minutes, window_s=window_min * 60.0, max_missing=max_missing)
    got_flags, got_still, got_periods, got_hours = [], [], [], []
    for mi, s, lab in zip(minutes, steps, labels, strict=True):
        got_flags.append(tr.add(T0 + 60.0 * mi, None if math.isnan(s) else s, lab))
        got_still.append(tr.still)
        got_periods += tr.closed
        got_hours.append(tr.rest_hours())
    got_periods += tr.finish()
    assert got_flags == want_flags
    assert got_still == want_still
    assert [(round((p.start_ts - T0) / 60.0), round((p.end_ts - T0) / 60.0), p.minutes, p.sleep)
            for p in got_periods] == want_periods
    np.testing.assert_allclose(got_hours, want_hours, equal_nan=True)
    ts = T0 + 60.0 * np.asarray(minutes, dtype=np.float64)
    assert rest_flags(ts, steps, labels, quiet).tolist() == want_flags
    if max_missing == MAX_MISSING:
        assert rest_periods(ts, steps, labels, quiet, sleep_minutes) == got_periods
    assert still_flags(ts, steps, quiet, max_missing).tolist() == got_still


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


def test_labels_veto_resting_hr_minutes_not_periods_and_name_sleep() -> None:
    ts = T0 + 60.0 * np.arange(40)
    steps = np.zeros(40)
    labels: list[str | None] = ["rest"] * 20 + ["eat"] + ["sleep"] * 19
    flags = rest_flags(ts, steps, labels, quiet_minutes=5)
    assert flags.nonzero()[0].tolist() == list(range(4, 20)) + list(range(21, 40))
    # the classifier's stray "eat" in still minutes is no resting-HR minute but does not cut the
    # period; a minute called sleep makes it sleep, however short
    assert [(p.minutes, p.sleep) for p in rest_periods(ts, steps, labels, quiet_minutes=5)] == [
        (36, True)]
    steps[30] = 3  # a step does end it
    assert [(p.minutes, p.sleep) for p in rest_periods(ts, steps, labels, quiet_minutes=5)] == [
        (26, True), (5, True)]


def test_short_silences_keep_a_period_long_ones_end_it() -> None:
    tr = RestTracker(quiet_minutes=2, max_missing=1)
    assert [tr.add(T0 + 60.0 * m, 0.0) for m in range(4)] == [False, True, True, True]
    assert tr.current_minutes == 3
    assert tr.add(T0 + 60.0 * 4, None) is False  # a lost step count: no resting-HR minute ...
    assert not tr.still and tr.closed == [] and tr.current_minutes == 3  # ... nor the end of rest
    assert tr.add(T0 + 60.0 * 5, 0.0) is False  # resting HR wants 2 recorded zeros in a row again
    assert tr.still and tr.current_minutes == 4
    assert tr.add(T0 + 60.0 * 8, 0.0) is False  # 2 minutes without any data: the period ends
    assert tr.closed == [RestPeriod(T0 + 60.0, T0 + 360.0, 4, False)]
    assert not tr.still and tr.add(T0 + 60.0 * 9, 0.0) is True and tr.still
    tr.add(T0 + 60.0 * 10, 5.0)  # a step ends it at once
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
    assert math.isnan(dict(zip(cm.metrics, cm.vector(w, "play"), strict=True))["resting_hr"])
    assert cm.rest.still and cm.rest.closed == [] and cm.rest.current_minutes == 7
    cm.vector(MinuteWindow(T0 + 660.0, hr_sum=70.0, hr_n=1, steps=12), None)
    assert cm.rest.closed == [RestPeriod(T0 + 240.0, T0 + 660.0, 7, False)]
