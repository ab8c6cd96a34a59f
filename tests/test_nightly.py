"""Nights (device.features.nightly), the night watch (device.detect.nightwatch) and the NightSignal
peer (edgeloop.evaluation.peers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.detect.nightwatch import NightWatch, NightWatchConfig, NightWatchStateError
from device.features.nightly import NightlyTracker, NightRecord, night_records
from edgeloop.evaluation.peers import nightsignal

D0 = 18_000  # an epoch day number


def _day_of_minutes(days: int, rng: np.random.Generator, rhr: float = 60.0,
                    walk_day_steps: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    n = days * 1440
    t = (D0 * 1440 + np.arange(n)) * 60.0
    minute = np.arange(n) % 1440
    steps = np.where((minute >= 8 * 60) & (minute < 22 * 60) & (rng.random(n) < 0.3),
                     walk_day_steps, 0).astype(float)  # fmt: skip
    hr = rhr + rng.normal(0, 1.0, n) + 0.3 * steps
    return t, hr, steps


def test_a_night_reads_resting_hr_restlessness_and_the_day_before() -> None:
    rng = np.random.default_rng(0)
    t, hr, steps = _day_of_minutes(3, rng)
    steps[1440 + 3 * 60 : 1440 + 3 * 60 + 5] = 20  # day 2, 03:00-03:05: up for five minutes
    recs = night_records(t, hr, t, steps)
    assert [r.day for r in recs] == [D0, D0 + 1, D0 + 2]
    r = recs[1]
    assert r.ts == (D0 + 1) * 86400.0 + 7 * 3600.0
    assert r.restless == 5.0
    assert r.rest_minutes == 7 * 60 - 5 - 11  # the walk's five minutes and the 11 after them
    assert abs(r.rhr - 60.0) < 0.5
    assert recs[0].steps != recs[0].steps  # no day before the first night: NaN
    day1 = slice(0, 1440)
    assert r.steps == steps[day1].sum()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 4 * 1440 - 1), max_size=40))
def test_tracker_minute_by_minute_equals_the_recording(seed: int, holes: list[int]) -> None:
    rng = np.random.default_rng(seed)
    t, hr, steps = _day_of_minutes(4, rng)
    hr[holes] = np.nan  # not worn
    steps[[h for h in holes if h % 2]] = np.nan  # not recorded
    batch = night_records(t, hr, t, steps)
    tr = NightlyTracker()
    live = [r for r in (tr.add(a, b, None if math.isnan(c) else c)
                        for a, b, c in zip(t, hr, steps, strict=True)) if r is not None]  # fmt: skip
    assert len(live) == len(batch) == 4
    for a, b in zip(live, batch, strict=True):
        assert a.day == b.day and a.rest_minutes == b.rest_minutes
        for f in ("rhr", "restless", "steps"):
            x, y = getattr(a, f), getattr(b, f)
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)


def test_tracker_closes_a_night_across_a_gap_and_ignores_repeats() -> None:
    tr = NightlyTracker(min_rest_minutes=1, min_worn_minutes=1)
    base = D0 * 86400.0
    for m in range(0, 6 * 60):
        assert tr.add(base + 60.0 * m, 58.0, 0.0) is None
    assert tr.add(base + 60.0 * 10, 99.0, 0.0) is None  # an earlier minute again: ignored
    rec = tr.add(base + 2 * 86400.0 + 3600.0, 60.0, 0.0)  # next data two days later, 01:00
    assert rec is not None and rec.day == D0 and rec.rhr == pytest.approx(58.0)


def _night(d: int, rhr: float, steps: float = 8000.0, restless: float = 10.0) -> NightRecord:
    return NightRecord(d, d * 86400.0 + 25200.0, rhr, 300, restless, steps)


def _settled(cfg: NightWatchConfig | None = None, nights: int = 30) -> NightWatch:
    w = NightWatch(cfg)
    rng = np.random.default_rng(5)
    for d in range(nights):
        w.update(_night(d, 60.0 + rng.normal(0, 1.5), 8000.0 * math.exp(rng.normal(0, 0.2))))
    return w


def test_one_wild_night_is_never_red_two_elevated_nights_are() -> None:
    w = _settled()
    assert w.update(_night(30, 95.0)).level == "yellow"  # z clipped: half the way at most
    for d in range(31, 36):
        w.update(_night(d, 60.0))
    assert w.level == "green"
    a1, a2, a3 = (w.update(_night(36 + k, 67.0)) for k in range(3))
    assert (a1.level, a2.level, a2.notify, a3.notify) == ("yellow", "red", True, False)


def test_sick_nights_do_not_become_the_baseline() -> None:
    w = _settled()
    before = w.update(_night(30, 60.0)).baseline["rhr"]
    for d in range(31, 31 + 10):
        a = w.update(_night(d, 70.0))
    assert a.level == "red" and a.baseline["rhr"] == pytest.approx(before, abs=0.6)
    for d in range(41, 41 + 30):  # after max_excluded nights the new level is accepted
        a = w.update(_night(d, 70.0))
    assert a.level == "green" and a.baseline["rhr"] > 68.0


def test_steps_drop_corroborates_and_restlessness_is_off_by_default() -> None:
    quiet = _settled()
    lazy = _settled()
    a = quiet.update(_night(30, 63.0))
    b = lazy.update(_night(30, 63.0, steps=1500.0, restless=200.0))
    assert b.night > a.night and b.z["steps"] > 2 and b.z["restless"] > 2
    c = _settled(NightWatchConfig(use_steps=False)).update(_night(30, 63.0, steps=1500.0))
    assert c.night == pytest.approx(a.z["rhr"])  # resting HR alone


def test_state_saves_restores_and_continues_exactly() -> None:
    rng = np.random.default_rng(9)
    nights = [_night(d, 60 + rng.normal(0, 2) + (8 if 40 <= d < 45 else 0),
                     8000 * math.exp(rng.normal(0, 0.3))) for d in range(70)]  # fmt: skip
    whole = NightWatch()
    ref = [whole.update(n) for n in nights]
    first = NightWatch()
    for n in nights[:42]:
        first.update(n)
    blob = first.state()
    assert len(blob) <= 4096
    second = NightWatch.from_state(blob)
    got = [second.update(n) for n in nights[42:]]
    assert got == ref[42:]
    with pytest.raises(NightWatchStateError, match="NightWatch.state"):
        NightWatch.from_state(b"{not json")
    with pytest.raises(ValueError, match="min_nights"):
        NightWatchConfig(min_nights=40)
    assert whole.update(nights[10]).notify is False  # an old night again: ignored


def test_nightsignal_as_published() -> None:
    """Hand-made: nights of 60 bpm, then 64, 65 (red on the second: >= baseline + 4), a missing
    night between two measured ones is imputed from its neighbours."""
    minutes_per_night = 7 * 60
    days = 20
    t, hr = [], []
    for d in range(days):
        level = 60.0 if d < 15 else (64.0 if d == 15 else 65.0)
        if d == 8:
            continue  # a missing night: imputed (60)
        for m in range(minutes_per_night):
            t.append((D0 + d) * 86400.0 + 60.0 * m)
            hr.append(level + 0.4)
    t_a, hr_a = np.array(t), np.array(hr)
    res = nightsignal(t_a, hr_a, t_a, np.zeros(len(t)))
    assert len(res.dates) == days and res.avg[8] == 60.0  # imputed
    assert res.level.tolist() == [0] * 15 + [0, 2, 2, 2, 2]
    assert res.alert_times(2)[0] == np.datetime64(int((D0 + 16) * 86400 + 7 * 3600), "s")
    # steps during the night: those minutes do not count
    steps = np.where(np.arange(len(t)) % 2 == 0, 0.0, 5.0)
    assert len(nightsignal(t_a, hr_a, t_a, steps).dates) == days


def test_fewer_steps_alone_is_not_an_illness() -> None:
    """Corroboration adds to a resting-HR rise and never makes one: the weeks of low activity
    after an illness (or a lazy week) do not keep the level red."""
    w = _settled()
    first = w.update(_night(30, 59.0, steps=1200.0))
    assert first.z["steps"] > 2 and first.z["rhr"] <= 0 and first.night == pytest.approx(first.z["rhr"])
    for d in range(31, 50):
        a = w.update(_night(d, 59.0, steps=1200.0))
        assert a.level == "green" and (a.z["rhr"] > 0 or a.night == pytest.approx(a.z["rhr"]))


def test_the_night_verdict_travels_in_the_typed_daily_summary() -> None:
    from shared import codec
    from shared.codec import SchemaError
    from shared.records import DailySummary, NightVerdict

    s = DailySummary(day="2026-01-01", night=NightVerdict(level="red", evidence=3.2, night_z=2.1,
                                                          z={"rhr": 2.5, "steps": None}))  # fmt: skip
    d = codec.to_json(s)
    assert codec.from_json(DailySummary, d, "body") == s
    d["night"]["level"] = "purple"
    with pytest.raises(SchemaError, match="night.level"):
        codec.from_json(DailySummary, d, "body")
