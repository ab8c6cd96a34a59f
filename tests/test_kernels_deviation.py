"""The deviation kernel against its plain-Python twin (tests/naive.py: NaiveEngine)."""

from __future__ import annotations

import dataclasses

import naive
import numpy as np
import numpy.testing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from device.detect.engine import Engine, EngineConfig
from device.kernels import config

# A config that warms up after 5 rows and fires quickly, so short streams reach every branch.
FAST = EngineConfig(warmup_s=300.0, warmup_n=5.0, cusum_h=0.05, cooldown_s=600.0,
                    bin_prior=2.0, e_prior_weight=5.0)  # fmt: skip
# The same with the pattern-novelty channel on: 3-minute segments, novelty after 10 of them.
NOVEL = dataclasses.replace(FAST, novelty_seg_s=180.0, novelty_min_segments=10.0,
                            novelty_memory_s=7200.0, novelty_vigilance=0.95)  # fmt: skip
T0 = 1_704_067_200.0


@st.composite
def streams(draw: st.DrawFn, max_rows: int = 120, n_metrics: int = 2) -> tuple:
    n = draw(st.integers(1, max_rows))
    steps = draw(arrays(np.float64, n, elements=st.sampled_from(
        [60.0, 60.0, 60.0, 300.0, 3600.0, 0.0, -60.0, 5 * 3600.0, 40 * 86400.0, np.nan])))  # fmt: skip
    ts = T0 + np.cumsum(np.nan_to_num(steps, nan=60.0))
    ts[np.isnan(steps)] = np.nan
    level = draw(st.floats(-100, 100))
    vals = draw(arrays(np.float64, (n, n_metrics), elements=st.one_of(
        st.floats(-5, 5).map(lambda x: x + level),
        st.sampled_from([np.nan, np.inf, level + 50.0, level - 50.0]))))  # fmt: skip
    dirs = draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n_metrics, max_size=n_metrics))
    return ts, vals, dirs


def _run_naive(ts: np.ndarray, vals: np.ndarray, dirs: list[int], cfg: EngineConfig) -> dict:
    ref = naive.NaiveEngine(vals.shape[1], cfg, dirs)
    rows = [ref.step(float(t), [float(x) for x in v]) for t, v in zip(ts, vals, strict=True)]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _compare(ts: np.ndarray, vals: np.ndarray, dirs: list[int], cfg: EngineConfig) -> None:
    names = [f"m{j}" for j in range(vals.shape[1])]
    eng = Engine(names, cfg, dict(zip(names, dirs, strict=True)))
    out = eng.process(ts, vals)
    ref = _run_naive(ts, vals, dirs, cfg)
    tol = {"rtol": config.EDGELOOP_TEST_RTOL, "atol": config.EDGELOOP_TEST_ATOL}
    npt.assert_allclose(out.scores, ref["score"], **tol)
    npt.assert_allclose(out.persistence, ref["pers"], **tol)
    npt.assert_allclose(out.baseline, ref["base"], **tol)
    npt.assert_allclose(out.spread, ref["sd"], **tol)
    npt.assert_allclose(out.level, ref["level"], **tol)
    npt.assert_allclose(out.combined, ref["comb"], **tol)
    npt.assert_allclose(out.novelty, ref["novel"], **tol)
    npt.assert_array_equal(out.flags, ref["flags"])
    assert [ev.ts for ev in out.events] == list(ts[ref["event"]])
    npt.assert_allclose([ev.score for ev in out.events], ref["escore"][ref["event"]], **tol)
    contrib = [tuple(n for n, c in zip(names, cs, strict=True) if c)
               for cs in ref["contrib"][ref["event"]]]  # fmt: skip
    assert [ev.metrics for ev in out.events] == contrib


def test_hand_example_matches_naive() -> None:
    ts = T0 + 60.0 * np.arange(30)
    vals = np.column_stack([np.r_[np.full(20, 10.0), np.full(10, 20.0)], np.full(30, 5.0)])
    vals[3, 1] = np.nan
    _compare(ts, vals, [1, 0], FAST)


@settings(max_examples=80, deadline=None)
@given(streams())
def test_kernel_equals_naive_fast_config(s: tuple) -> None:
    _compare(*s, FAST)


@settings(max_examples=60, deadline=None)
@given(streams(max_rows=200))
def test_kernel_equals_naive_with_pattern_novelty(s: tuple) -> None:
    _compare(*s, NOVEL)


def test_pattern_novelty_is_exercised() -> None:
    """The novelty comparison is not vacuous: a new shape after a repeating one scores."""
    ts = T0 + 60.0 * np.arange(600)
    x = np.where((np.arange(600) // 6) % 2 == 0, 10.0, 12.0)  # a square wave of 6-minute halves
    x[500:530] = 11.0 + np.linspace(-3, 3, 30)  # a ramp: a shape never seen
    out = Engine(["m0"], NOVEL).process(ts, x.reshape(-1, 1))
    ref = _run_naive(ts, x.reshape(-1, 1), [0], NOVEL)
    assert np.count_nonzero(out.novelty) > 50
    npt.assert_allclose(out.novelty[:, 0], ref["novel"][:, 0], rtol=1e-7, atol=1e-9)
    assert out.novelty[500:540].max() > 2.0 > np.median(out.novelty[200:500][out.novelty[200:500] != 0])


@settings(max_examples=25, deadline=None)
@given(streams(n_metrics=1))
def test_kernel_equals_naive_default_config(s: tuple) -> None:
    _compare(*s, EngineConfig())


def test_naive_twin_can_disagree() -> None:
    """The comparison is not vacuous: a different config gives different output."""
    ts = T0 + 60.0 * np.arange(40)
    vals = np.column_stack([np.r_[np.full(20, 10.0), np.full(20, 30.0)]])
    eng = Engine(["m0"], FAST)
    ref = _run_naive(ts, vals, [0], EngineConfig(warmup_s=300.0, warmup_n=5.0, cusum_h=5.0))
    assert not np.allclose(eng.process(ts, vals).persistence, ref["pers"])
