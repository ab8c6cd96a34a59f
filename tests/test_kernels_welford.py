"""Welford kernels against their definitions in tests/naive.py."""

from __future__ import annotations

import naive
import numpy as np
import numpy.testing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from device.kernels.welford import _decay_kernel, _merge_kernel, _update_kernel

values = arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e4, 1e4))
SET = settings(max_examples=60, deadline=None)


def _feed(xs: np.ndarray, us: np.ndarray) -> tuple[float, float, float]:
    w = mean = m2 = 0.0
    for x, u in zip(xs, us, strict=True):
        w, mean, m2 = _update_kernel(w, mean, m2, float(x), float(u))
    return w, mean, m2


def test_update_small_hand_example() -> None:
    # 1, 2, 3 with unit weights: mean 2, M2 = 1 + 0 + 1
    assert _feed(np.array([1.0, 2.0, 3.0]), np.ones(3)) == (3.0, 2.0, 2.0)


@SET
@given(values, st.data())
def test_update_equals_two_pass_definition(xs: np.ndarray, data: st.DataObject) -> None:
    us = data.draw(arrays(np.float64, xs.shape[0], elements=st.floats(0.01, 100.0)))
    npt.assert_allclose(_feed(xs, us), naive.welford_batch(list(xs), list(us)), rtol=1e-8,
                        atol=1e-6)  # fmt: skip


@SET
@given(values, values)
def test_merge_equals_feeding_both(a: np.ndarray, b: np.ndarray) -> None:
    sa = _feed(a, np.ones_like(a))
    sb = _feed(b, np.ones_like(b))
    both = _feed(np.concatenate([a, b]), np.ones(a.size + b.size))
    npt.assert_allclose(_merge_kernel(*sa, *sb), both, rtol=1e-8, atol=1e-6)


@SET
@given(st.floats(0, 1e6), st.floats(0, 1e6), st.floats(-1e6, 1e6), st.floats(0, 1e7))
def test_decay_matches_reference(w: float, m2: float, dt: float, mem: float) -> None:
    npt.assert_allclose(_decay_kernel(w, m2, dt, mem), naive.decay(w, m2, dt, mem))
