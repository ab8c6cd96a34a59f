"""Engine behaviour on a synthetic collar: illness alerts within hours, excitement never alerts.

Also personalisation (accept_new_normal, widen), state errors and contamination protection.
"""

from __future__ import annotations

import numpy as np
import pytest

from device.detect.engine import Engine, EngineConfig, EngineStateError
from device.kernels import layout as L

T0 = 1_704_067_200.0  # 2024-01-01 00:00 UTC
DAY = 86400.0


def dog_minutes(
    days: int = 14,
    seed: int = 0,
    illness: tuple[float, float] | None = (8.0, 11.0),
    excitement_days: tuple[float, ...] = (5.625,),
    rhr_shift: float = 12.0,
    activity_factor: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
    """Minute rows ``(ts, values)`` with metrics (heart_rate, resting_hr, activity).

    Awake 07-21 h with random walks; resting HR is HR while at rest for 10+ minutes, else NaN.
    ``illness`` = (start_day, end_day): resting HR + rhr_shift, activity x activity_factor,
    restless nights. Each excitement day (fractional day) adds 15 minutes of HR +40, activity 100.
    """
    rng = np.random.default_rng(seed)
    n = int(days * 1440)
    ts = T0 + 60.0 * np.arange(n)
    day = (ts - T0) / DAY
    hour = ((ts - T0) % DAY) / 3600.0
    awake = (hour >= 7) & (hour < 21)
    walking = np.zeros(n, dtype=bool)
    i = 0
    while i < n:
        if awake[i] and rng.random() < 0.01:
            length = int(rng.integers(10, 40))
            walking[i : i + length] = True
            i += length
        i += 1
    activity = np.where(walking, rng.normal(60, 15, n), rng.gamma(1.0, 2.0, n))
    activity = np.clip(activity, 0, None)
    base_rhr = 72.0 + 4.0 * np.sin(2 * np.pi * (hour - 15) / 24) + rng.normal(0, 1.0, days)[
        day.astype(int)
    ]
    ill = np.zeros(n, dtype=bool)
    if illness is not None:
        ill = (day >= illness[0]) & (day < illness[1])
        activity = np.where(ill, activity * activity_factor, activity)
        restless = ill & ~awake & (rng.random(n) < 0.05)
        activity = np.where(restless, activity + 20.0, activity)
        base_rhr = np.where(ill, base_rhr + rhr_shift, base_rhr)
    hr = base_rhr + 0.6 * activity + rng.normal(0, 3.0, n)
    for d in excitement_days:
        k = int(d * 1440)
        hr[k : k + 15] += 40.0
        activity[k : k + 15] = 100.0
    # resting: low activity for the last 10 minutes
    low = activity < 10
    run = np.zeros(n, dtype=np.int64)
    for j in range(n):
        run[j] = run[j - 1] + 1 if (low[j] and j > 0) else (1 if low[j] else 0)
    rhr = np.where(run >= 10, hr, np.nan)
    return ts, np.column_stack([hr, rhr, activity])


METRICS = ("heart_rate", "resting_hr", "activity")
DIRS = {"heart_rate": 1, "resting_hr": 1, "activity": -1}


def _run(**kw: object) -> tuple[np.ndarray, Engine, list]:
    ts, v = dog_minutes(**kw)  # type: ignore[arg-type]
    eng = Engine(METRICS, directions=DIRS)
    return ts, eng, eng.process(ts, v).events


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_illness_alerts_within_hours_with_both_heart_metrics(seed: int) -> None:
    ts, _, events = _run(seed=seed)
    assert events, "a 3-day illness must alert"
    first = events[0]
    assert 8.0 * DAY - 6 * 3600 <= first.ts - T0 <= 8.0 * DAY + 12 * 3600
    assert first.start_ts <= first.ts
    assert "resting_hr" in first.metrics
    assert all(d == 1 for m, d in zip(first.metrics, first.directions, strict=True) if "hr" in m)
    assert first.kind == "sustained" and 0.0 <= first.score <= 1.0
    assert first.severity in ("info", "warning", "critical")
    assert all(o > b for o, b in zip(first.observed, first.baseline, strict=True))
    assert all(ev.ts - T0 >= 7.5 * DAY for ev in events), "no alerts before the illness"


@pytest.mark.parametrize("seed", [0, 3])
def test_excitement_spikes_never_alert(seed: int) -> None:
    ts, v = dog_minutes(seed=seed, illness=None, excitement_days=(2.6, 5.625, 9.5, 12.4))
    out = Engine(METRICS, directions=DIRS).process(ts, v)
    assert out.events == []
    k = int(5.625 * 1440)
    assert out.scores[k + 5, 0] > 0.3, "the spike itself is scored"
    assert out.persistence[:, :2].max() < 0.5


def test_illness_does_not_become_the_new_normal() -> None:
    ts, v = dog_minutes(seed=4, illness=(6.0, 13.0), days=14)
    eng = Engine(METRICS, directions=DIRS)
    out = eng.process(ts, v)
    j = METRICS.index("resting_hr")
    before = np.nanmean(out.baseline[int(5.5 * 1440) : int(6 * 1440), j])
    late = np.nanmean(out.baseline[int(12.5 * 1440) : int(13 * 1440), j])
    assert late - before < 3.0, "a week of +12 bpm moves the baseline by < 3 bpm"
    assert out.persistence[int(12.9 * 1440), j] > 0.5, "still deviating after a week"


def test_accept_new_normal_recentres_and_silences() -> None:
    ts, v = dog_minutes(seed=5, illness=(6.0, 14.0), days=14)
    eng = Engine(METRICS, directions=DIRS)
    cut = int(7 * 1440)
    a = eng.process(ts[:cut], v[:cut])
    assert a.events
    eng.accept_new_normal("resting_hr")
    eng.accept_new_normal("heart_rate")
    b = eng.process(ts[cut:], v[cut:])
    j = METRICS.index("resting_hr")
    assert b.persistence[-1, j] < 0.5
    assert b.baseline[: 1440 // 2, j].mean() > a.baseline[cut - 1440, j] + 5.0
    with pytest.raises(ValueError, match="unknown metric"):
        eng.accept_new_normal("nope")


def test_widen_raises_the_threshold() -> None:
    ts, v = dog_minutes(seed=0)
    narrow = Engine(METRICS, directions=DIRS)
    wide = Engine(METRICS, directions=DIRS)
    for m in METRICS:
        wide.widen(m, 20.0)
    assert narrow.process(ts, v).events
    assert wide.process(ts, v).events == []
    with pytest.raises(ValueError, match="> 0"):
        wide.widen("activity", 0.0)


def test_restore_rejects_foreign_bytes() -> None:
    eng = Engine(METRICS)
    with pytest.raises(EngineStateError, match="Engine.state"):
        Engine.from_state(b"garbage", METRICS)
    with pytest.raises(EngineStateError, match="expected"):
        Engine.from_state(eng.state(), METRICS[:2])


def test_zero_inflated_metric_learns_a_nonzero_baseline() -> None:
    """Regression: hours of exact zeros must not freeze the baseline at 0 (collapsed spread)."""
    rng = np.random.default_rng(2)
    n = 4 * 1440
    ts = T0 + 60.0 * np.arange(n)
    hour = (np.arange(n) // 60) % 24
    steps = np.where((hour >= 8) & (hour < 20) & (rng.random(n) < 0.3), rng.integers(20, 100, n), 0)
    out = Engine(("steps",)).process(ts, steps.astype(float).reshape(-1, 1))
    day_hours = (hour >= 8) & (hour < 20)
    assert out.baseline[-1440:, 0][day_hours[-1440:]].mean() > 5.0
    assert out.spread[-1440:, 0].min() > 1.0


def test_from_state_keeps_widen_and_applies_given_directions() -> None:
    ts, v = dog_minutes(seed=0, days=3, illness=None)
    eng = Engine(METRICS, directions=DIRS)
    eng.widen("activity", 2.0)
    eng.process(ts, v)
    a = METRICS.index("activity")
    again = Engine.from_state(eng.state(), METRICS, directions={"activity": 0})
    # the widen factor survives the round trip: activity's thresholds stay doubled, the rest 1
    assert again._st[a, L.M_SCALE] == 2.0
    assert [again._st[i, L.M_SCALE] for i in range(len(METRICS)) if i != a] == [1.0, 1.0]
    # the given direction replaces the saved one for the metric it names, and only there
    assert eng._st[a, L.M_DIR] == -1.0 and again._st[a, L.M_DIR] == 0.0
    for i, m in enumerate(METRICS):
        if m != "activity":
            assert again._st[i, L.M_DIR] == float(DIRS[m]), m
    changed = np.argwhere(~((again._st == eng._st) | (np.isnan(again._st) & np.isnan(eng._st))))
    assert changed.tolist() == [[a, L.M_DIR]], "nothing else of the learnt state changes"
    # without directions the state comes back exactly, widen included
    same = Engine.from_state(eng.state(), METRICS)
    assert same.state() == eng.state() and same._st[a, L.M_SCALE] == 2.0
    # and it scores on as the original does
    more_ts, more_v = dog_minutes(seed=1, days=1, illness=None)
    more_ts = more_ts + (ts[-1] - more_ts[0]) + 60.0
    np.testing.assert_array_equal(same.process(more_ts, more_v).combined, eng.process(more_ts, more_v).combined)


def test_accept_new_normal_without_a_metric_accepts_every_metric() -> None:
    ts, v = dog_minutes(seed=0, days=3, illness=None)
    eng = Engine(METRICS, directions=DIRS)
    eng.process(ts, v)
    eng.accept_new_normal()  # all metrics at once
    assert not eng.warming_up


def _five_minute_series(days: float = 12.0, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(days * 288)
    return T0 + 300.0 * np.arange(n), 10.0 + rng.normal(0.0, 1.0, n)


def test_combined_sees_a_second_shift_inside_the_protection_week() -> None:
    """A first level shift saturates persistence (baseline protected for a week); a second,
    larger shift two days later must still score high (the evidence is in z units, not capped)."""
    ts, x = _five_minute_series()
    day = (ts - T0) / DAY
    x[day >= 8.0] += 5.0
    x[day >= 10.0] += 25.0
    out = Engine(("value",)).process(ts, x.reshape(-1, 1))
    assert out.persistence[(day >= 9.5) & (day < 10.0), 0].min() == 1.0  # still protected
    quiet = out.combined[(day >= 9.5) & (day < 10.0)].max()
    second = out.combined[(day >= 10.0) & (day < 10.1)].max()
    assert second > 0.4 and second > 2 * quiet  # ELE1 (max(spike, persistence) = 1): ~0


def test_combined_refractory_one_high_score_per_episode() -> None:
    """After a spike, the following rows of the same episode are damped below half the peak."""
    ts, x = _five_minute_series(days=6.0)
    i = 5 * 288
    x[i : i + 3] += 12.0
    c = Engine(("value",)).process(ts, x.reshape(-1, 1)).combined
    peak = int(np.argmax(c[i : i + 12])) + i
    assert c[peak] > 0.5
    assert c[peak + 1 : peak + 36].max() <= 0.5 * c[peak] + 1e-12


def test_combined_envelope_a_recurring_spike_is_less_news() -> None:
    """Spikes of the same size 6 hours apart: the later ones score lower against the first ones
    with the envelope than without it; a spike of the other sign is still news."""
    ts, x = _five_minute_series(days=8.0)
    starts = [int((5.0 + 0.25 * k) * 288) for k in range(4)]  # every 6 h from day 5
    for i in starts:
        x[i] += 8.0
    down = int(6.5 * 288)
    x[down] -= 8.0

    def later_over_first(cfg: EngineConfig) -> tuple[float, float]:
        c = Engine(("value",), cfg).process(ts, x.reshape(-1, 1)).combined
        peaks = [c[i : i + 6].max() for i in starts]
        return float(np.mean(peaks[2:]) / max(peaks[:2])), float(c[down : down + 6].max())

    with_env, down_score = later_over_first(EngineConfig())
    without, _ = later_over_first(EngineConfig(envelope_factor=0.0))
    assert with_env < 0.8 * without  # measured: 0.54 with the envelope, 0.72 without
    assert down_score > 0.5


def test_combined_hard_refractory_one_alert_per_rising_edge() -> None:
    """Once the refractory peak is at refractory_level (0.5), a higher score of the same episode
    is damped unless it beats the peak by refractory_margin (0.2): a rising edge alerts once."""
    ts, x = _five_minute_series(days=6.0)
    i = 5 * 288
    x[i : i + 6] += np.array([6.0, 7.0, 8.0, 9.0, 10.0, 11.0])  # a rising edge, row by row
    c = Engine(("value",)).process(ts, x.reshape(-1, 1)).combined
    above = np.flatnonzero(c[i : i + 36] >= 0.5)
    assert len(above) == 1
    loose = Engine(("value",), EngineConfig(refractory_level=2.0)).process(ts, x.reshape(-1, 1))
    assert np.count_nonzero(loose.combined[i : i + 36] >= 0.5) >= 3


def test_combined_step_cap_a_lone_row_after_a_gap_is_not_the_whole_short_average() -> None:
    """Irregular sampling: a moderate deviation in the first row after a 40-minute gap is damped
    by surprise_step_cap (the row weighs 1.5 typical steps in the 10-minute short average, not
    40 minutes); on a regular stream the cap never binds (identical output)."""
    ts, x = _five_minute_series(days=6.0)
    regular = [
        Engine(("value",), EngineConfig(surprise_step_cap=cap)).process(ts, x.reshape(-1, 1))
        for cap in (1.5, 0.0)
    ]
    assert np.array_equal(regular[0].combined, regular[1].combined)
    i = 5 * 288
    keep = np.ones(len(ts), dtype=bool)
    keep[i - 7 : i] = False  # 40 minutes without rows before row i
    x = x.copy()
    x[i] += 4.0
    ts_g, x_g = ts[keep], x[keep].reshape(-1, 1)
    j = int(np.searchsorted(ts_g, ts[i]))

    def score(cap: float) -> float:
        eng = Engine(("value",), EngineConfig(surprise_step_cap=cap))
        return float(eng.process(ts_g, x_g).combined[j])

    capped, uncapped = score(1.5), score(0.0)  # measured: 0.46 and 0.71
    assert uncapped > 0.6 and capped < 0.5 and capped < 0.75 * uncapped
