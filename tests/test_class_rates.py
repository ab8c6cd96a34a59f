"""A camera's class rates by hour of day (device/detect/class_rates.py) and its health watch
(device/detect/health.py): pure computation, minute in, findings out."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from device.detect.class_rates import ClassRates, poisson_lower, poisson_upper
from device.detect.health import HealthWatch

DAY, HOUR = 86400.0, 3600.0
T0 = 20000 * DAY  # a UTC midnight


def _gate_camera() -> ClassRates:
    """Three days of a gate camera: people and cars in the day, cars only at night."""
    rates = ClassRates(learn_days=3.0)
    for m in range(3 * 1440):
        ts = T0 + m * 60.0
        h = (m // 60) % 24
        day = 7 <= h < 19
        out = rates.update(ts, {"person": 1 if day and m % 2 == 0 else 0, "car": 1 if day or m % 10 == 0 else 0})
        assert out == [], "nothing is found while learning"
    return rates


def _run(rates: ClassRates, start: float, minutes: int, objects: dict[str, int]) -> list:  # type: ignore[type-arg]
    found = []
    for m in range(minutes):
        found += rates.update(start + m * 60.0, objects)
    return found


def test_a_person_at_3_is_an_event_the_same_count_at_8_is_not() -> None:
    night = _gate_camera()
    found = _run(night, T0 + 3 * DAY + 3 * HOUR, 20, {"person": 1, "car": 0})
    assert [f.what for f in found] == ["class_rate:person"], found
    f = found[0]
    assert f.kind == "novel" and f.observed >= 3 and f.expected < 0.5 and 0.5 <= f.score <= 1.0
    assert f.ts - f.start_ts <= 10 * 60, "caught within minutes of the first person"
    morning = _gate_camera()
    assert _run(morning, T0 + 3 * DAY + 8 * HOUR, 20, {"person": 1, "car": 1}) == []


def test_a_class_never_seen_at_this_camera_is_novel_once_per_episode() -> None:
    rates = _gate_camera()
    start = T0 + 3 * DAY + 12 * HOUR
    found = _run(rates, start, 60, {"person": 1, "car": 1, "deer": 2})
    assert [f.what for f in found] == ["novel_class:deer"]
    assert found[0].start_ts == start and found[0].ts == start + 2 * 60  # the third minute confirms
    one_off = _gate_camera()
    assert _run(one_off, start, 1, {"person": 1, "car": 1, "deer": 1}) == [], "one frame is not enough"


def test_a_moved_camera_is_a_scene_change_and_its_rates_are_learnt_again() -> None:
    rates = _gate_camera()
    found = _run(rates, T0 + 3 * DAY + 10 * HOUR, 120, {"person": 1, "dog": 0})  # no cars any more
    assert [f.what for f in found] == ["scene_change"], found
    assert found[0].observed == 0 and found[0].expected >= rates.absent_min_expected
    assert rates.learning(found[0].ts + 60), "the new view is learnt from scratch"


def test_rates_survive_a_restart_and_a_bad_state_is_refused() -> None:
    rates = _gate_camera()
    again = ClassRates()
    again.restore(rates.state())
    assert again.rate("person", 3) == rates.rate("person", 3) and again.first_ts == rates.first_ts
    try:
        again.restore({"minutes": [1.0] * 5, "counts": {}})
    except ValueError as exc:
        assert "24 hourly values" in str(exc)
    else:
        raise AssertionError("a short state must be refused")


def _reference_pmf(i: int, mu: float) -> float:
    return math.exp(-mu + i * math.log(mu) - math.lgamma(i + 1))


@given(st.integers(0, 300), st.floats(0.01, 200.0))
def test_poisson_tails_agree_with_a_plain_sum_and_with_each_other(k: int, mu: float) -> None:
    below = sum(_reference_pmf(i, mu) for i in range(k + 1))
    assert math.isclose(poisson_lower(k, mu), min(1.0, below), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(poisson_upper(k + 1, mu) + poisson_lower(k, mu), 1.0, rel_tol=1e-9)
    assert poisson_upper(k + 1, mu) <= poisson_upper(k, mu) + 1e-15, "the upper tail shrinks as k grows"


def test_the_health_watch_reports_a_frozen_camera_after_the_configured_minutes() -> None:
    for minutes in (10.0, 30.0):
        watch = HealthWatch(frozen_minutes=minutes)
        found = []
        for m in range(120):  # frozen from minute 20 for 60 minutes
            unchanged = 60.0 * (m - 20) if 20 <= m < 80 else 0.0
            found += [(m, f) for f in watch.update(T0 + m * 60.0, unchanged, None)]
        assert [(m, f.what) for m, f in found] == [(20 + int(minutes), "frozen")]
        assert found[0][1].start_ts == T0 + 20 * 60.0 and found[0][1].kind == "health"


def test_the_health_watch_reports_a_dropout_and_a_low_battery_once() -> None:
    watch = HealthWatch(dropout_minutes=60.0, battery_percent=15)
    assert watch.update(T0, None, 40) == []
    gap = watch.update(T0 + 3 * HOUR, None, 14)
    assert sorted(f.what for f in gap) == ["battery_low", "dropout"]
    assert next(f for f in gap if f.what == "dropout").observed == 180.0
    assert watch.update(T0 + 3 * HOUR + 60, None, 13) == [], "once per episode"
    assert watch.update(T0 + 4 * HOUR, None, 90) == [] and [f.what for f in watch.update(T0 + 4 * HOUR + 60, None, 10)] == ["battery_low"]


def _even(rate: float, m: int) -> int:
    """Objects in minute m for an even stream at ``rate`` per minute (exact long-run mean)."""
    return math.floor((m + 1) * rate) - math.floor(m * rate)


@given(st.dictionaries(st.sampled_from(["person", "car", "dog", "cat"]),
                       st.lists(st.floats(0.0, 3.0), min_size=24, max_size=24), min_size=1, max_size=3))
def test_a_camera_that_sees_what_it_always_sees_raises_nothing(hourly: dict[str, list[float]]) -> None:
    """Property: any per-class, per-hour pattern, learnt for a day and then seen again exactly,
    gives no novel class, no rate far off and no scene change."""
    rates = ClassRates(learn_days=1.0)
    found = []
    for m in range(2 * 1440):
        h = (m // 60) % 24
        found += rates.update(T0 + m * 60.0, {lab: _even(r[h], m) for lab, r in hourly.items()})
    assert found == [], [(f.what, f.observed, f.expected) for f in found]
