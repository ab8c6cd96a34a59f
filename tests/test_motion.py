"""Tests for the synthetic collar accelerometer (firmware_sim.motion)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.motion import ACTIVITIES, accel_window


def _dominant_freq(x: np.ndarray, rate_hz: float) -> float:
    mag = np.linalg.norm(x, axis=1)
    spec = np.abs(np.fft.rfft(mag - mag.mean()))
    freqs = np.fft.rfftfreq(len(mag), 1 / rate_hz)
    band = freqs > 0.8
    return float(freqs[band][np.argmax(spec[band])])


@pytest.mark.parametrize("activity", ACTIVITIES)
def test_shape_dtype_and_gravity(activity: str) -> None:
    x = accel_window(activity, 250, 25.0, np.random.default_rng(1))
    assert x.shape == (250, 3) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    # mean magnitude stays near 1 g (gravity dominates the average)
    assert 0.6 < float(np.linalg.norm(x.mean(axis=0))) < 1.4


def test_deterministic_from_rng() -> None:
    for act in ACTIVITIES:
        a = accel_window(act, 100, 20.0, np.random.default_rng(7))
        b = accel_window(act, 100, 20.0, np.random.default_rng(7))
        c = accel_window(act, 100, 20.0, np.random.default_rng(8))
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_activity_energy_ordering() -> None:
    rng = np.random.default_rng(3)

    def mean_std(act: str) -> float:
        return float(np.mean([np.linalg.norm(accel_window(act, 200, 25.0, rng), axis=1).std()
                              for _ in range(20)]))

    sleep, rest, walk, run = (mean_std(a) for a in ("sleep", "rest", "walk", "run"))
    assert sleep < 0.03 and rest < 0.05
    assert rest < walk < run
    assert mean_std("play") > walk


def test_gait_frequencies() -> None:
    rng = np.random.default_rng(11)
    walk = [_dominant_freq(accel_window("walk", 500, 25.0, rng), 25.0) for _ in range(10)]
    run = [_dominant_freq(accel_window("run", 500, 25.0, rng), 25.0) for _ in range(10)]
    assert 1.3 <= np.median(walk) <= 2.2
    assert 2.3 <= np.median(run) <= 3.8


def test_intensity_scales_motion() -> None:
    lo = accel_window("walk", 200, 25.0, np.random.default_rng(5), intensity=0.5)
    hi = accel_window("walk", 200, 25.0, np.random.default_rng(5), intensity=1.5)
    assert np.linalg.norm(hi, axis=1).std() > np.linalg.norm(lo, axis=1).std()


def test_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown activity"):
        accel_window("fly", 10, 25.0, rng)
    with pytest.raises(ValueError):
        accel_window("walk", 10, 0.0, rng)
    assert accel_window("walk", 0, 25.0, rng).shape == (0, 3)


@settings(max_examples=30, deadline=None)
@given(
    activity=st.sampled_from(ACTIVITIES),
    n=st.integers(1, 400),
    rate=st.floats(5.0, 100.0),
    seed=st.integers(0, 2**32 - 1),
    intensity=st.floats(0.0, 3.0),
)
def test_any_input_finite_and_in_range(activity: str, n: int, rate: float, seed: int,
                                       intensity: float) -> None:
    x = accel_window(activity, n, rate, np.random.default_rng(seed), intensity)
    assert x.shape == (n, 3)
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 8.0)
