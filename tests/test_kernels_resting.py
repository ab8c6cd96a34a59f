"""Resting heart rate kernel against its plain-Python twin."""

from __future__ import annotations

import naive
import numpy as np
import numpy.testing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from device.features.resting_hr import FeatureInputError, resting_hr


def test_walk_then_rest() -> None:
    t = 60.0 * np.arange(20)
    steps = np.zeros(20)
    steps[[0, 15]] = 10.0
    ts, rhr = resting_hr(t, 50.0 + np.arange(20), t, steps, quiet_minutes=12)
    assert ts.tolist() == [720.0, 780.0, 840.0]
    assert rhr.tolist() == [62.0, 63.0, 64.0]


def test_sub_minute_heart_rate_is_averaged_and_missing_steps_are_not_quiet() -> None:
    t_hr = 15.0 * np.arange(4 * 30)  # 30 minutes at 15 s
    t_st = 60.0 * np.arange(30)
    steps = np.zeros(30)
    steps[20] = np.nan  # missing minute: the next 12 minutes are not quiet
    ts, rhr = resting_hr(t_hr, np.tile([60.0, 62.0, 64.0, 66.0], 30), t_st, steps, 12)
    assert ts.tolist() == [m * 60.0 for m in range(11, 20)]
    npt.assert_allclose(rhr, 63.0)


def test_bad_input_is_named() -> None:
    try:
        resting_hr(np.zeros(3), np.zeros(2), np.zeros(1), np.zeros(1))
    except FeatureInputError as exc:
        assert "same length" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected FeatureInputError")


@settings(max_examples=80, deadline=None)
@given(
    arrays(np.float64, st.integers(0, 200), elements=st.sampled_from([0.0, 0.0, 0.0, 5.0, np.nan])),
    st.lists(st.floats(0, 3 * 3600.0), max_size=300),
    st.integers(1, 15),
)
def test_kernel_equals_naive(steps: np.ndarray, t_hr: list[float], quiet: int) -> None:
    t_st = 60.0 * np.arange(steps.size)
    t_hr_a = np.array(t_hr, dtype=np.float64)
    hr = 60.0 + (t_hr_a % 7.0)
    got = resting_hr(t_hr_a, hr, t_st, steps, quiet)
    ref = naive.resting_hr(t_hr_a, hr, t_st, steps, quiet)
    npt.assert_allclose(got[0], ref[0])
    npt.assert_allclose(got[1], ref[1], rtol=1e-12)
