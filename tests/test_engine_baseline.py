"""device.baseline: doctests, mergeable statistics, and equality with the Engine's baseline."""

from __future__ import annotations

import doctest

import numpy as np
import numpy.testing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import device.baseline.circadian
import device.baseline.stats
import device.detect.engine
import device.features.resting_hr
from device.baseline import CircadianBaseline, RunningStats
from device.detect.engine import Engine, EngineConfig

T0 = 1_704_067_200.0


def test_doctests() -> None:
    for mod in (device.baseline.stats, device.baseline.circadian, device.detect.engine,
                device.features.resting_hr):  # fmt: skip
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0, mod.__name__


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(1, 30), elements=st.floats(-1e3, 1e3)),
       arrays(np.float64, st.integers(1, 30), elements=st.floats(-1e3, 1e3)))  # fmt: skip
def test_running_stats_merge_equals_concatenation(a: np.ndarray, b: np.ndarray) -> None:
    sa, sb, both = RunningStats(), RunningStats(), RunningStats()
    for x in a:
        sa.update(float(x))
    for x in b:
        sb.update(float(x))
    for x in np.concatenate([a, b]):
        both.update(float(x))
    merged = sa + sb
    npt.assert_allclose([merged.n, merged.mean, merged.m2], [both.n, both.mean, both.m2],
                        rtol=1e-9, atol=1e-6)  # fmt: skip
    npt.assert_allclose(np.var(np.concatenate([a, b])), merged.var, rtol=1e-9, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.integers(5, 300), elements=st.floats(50, 90)),
       st.sampled_from([60.0, 300.0, 3600.0]))  # fmt: skip
def test_circadian_baseline_is_the_engine_baseline(x: np.ndarray, step: float) -> None:
    cfg = EngineConfig(warmup_s=1e12)  # never warm: no persistence, no protection
    ts = T0 + step * np.arange(x.size)
    out = Engine(("m",), cfg).process(ts, x.reshape(-1, 1))
    b = CircadianBaseline(cfg)
    for k, (t, v) in enumerate(zip(ts, x, strict=True)):
        mean, sd = b.predict(t)
        if k > 0:
            npt.assert_allclose([mean, sd], [out.baseline[k, 0], out.spread[k, 0]], rtol=1e-12)
        b.learn_one(t, v)


def test_merge_two_devices_and_extract_from_engine() -> None:
    rng = np.random.default_rng(0)
    ts = T0 + 60.0 * np.arange(2 * 1440)
    x = 70 + rng.normal(0, 2, ts.size)
    a, b = CircadianBaseline(), CircadianBaseline()
    for t, v in zip(ts[::2], x[::2], strict=True):
        a.learn_one(t, v)
    for t, v in zip(ts[1::2], x[1::2], strict=True):
        b.learn_one(t, v)
    n_before = a.overall().n
    a += b
    assert a.overall().n > 1.9 * n_before
    assert abs(a.predict(ts[-1])[0] - 70) < 0.5
    eng = Engine(("hr",))
    eng.process(ts, x.reshape(-1, 1))
    e = CircadianBaseline.from_engine(eng, "hr")
    assert abs(e.score_one(ts[-1] + 60, 70.0)) < 0.5
    assert e.score_one(ts[-1] + 60, 90.0) > 5
