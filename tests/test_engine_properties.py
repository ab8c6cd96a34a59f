"""Engine properties: live == replay (any chunking), save/restore, bad input never gives NaN."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_kernels_deviation import FAST, NOVEL, streams

from device.detect.engine import Engine, EngineConfig, EngineInputError, EngineOutput

METRICS = ("a", "b")


def _cat(outs: list[EngineOutput]) -> dict[str, np.ndarray]:
    keys = ("scores", "persistence", "combined", "flags", "baseline", "spread", "level", "novelty")
    return {k: np.concatenate([getattr(o, k) for o in outs]) for k in keys}


def _assert_same(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> None:
    for k in x:
        npt.assert_array_equal(x[k], y[k], err_msg=k)


@settings(max_examples=40, deadline=None)
@given(streams(max_rows=200), st.lists(st.integers(1, 50), min_size=1, max_size=10),
       st.sampled_from([FAST, NOVEL]))  # fmt: skip
def test_any_chunking_equals_one_batch(s: tuple, cuts: list[int], cfg: EngineConfig) -> None:
    ts, vals, dirs = s
    d = dict(zip(METRICS, dirs, strict=True))
    whole = Engine(METRICS, cfg, d).process(ts, vals)
    eng = Engine(METRICS, cfg, d)
    outs, i, k = [], 0, 0
    while i < len(ts):
        j = min(len(ts), i + cuts[k % len(cuts)])
        outs.append(eng.process(ts[i:j], vals[i:j]))
        i, k = j, k + 1
    _assert_same(_cat([whole]), _cat(outs))
    assert [e for o in outs for e in o.events] == whole.events


@settings(max_examples=15, deadline=None)
@given(streams(max_rows=60))
def test_process_one_equals_process(s: tuple) -> None:
    ts, vals, dirs = s
    d = dict(zip(METRICS, dirs, strict=True))
    whole = Engine(METRICS, FAST, d).process(ts, vals)
    eng = Engine(METRICS, FAST, d)
    outs = [eng.process_one(float(t), list(v)) for t, v in zip(ts, vals, strict=True)]
    _assert_same(_cat([whole]), _cat(outs))


@settings(max_examples=15, deadline=None)
@given(streams(max_rows=60))
def test_process_one_reuse_gives_the_same_values(s: tuple) -> None:
    ts, vals, dirs = s
    d = dict(zip(METRICS, dirs, strict=True))
    whole = Engine(METRICS, NOVEL, d).process(ts, vals)
    eng = Engine(METRICS, NOVEL, d)
    keys = ("scores", "persistence", "combined", "flags", "baseline", "spread", "level", "novelty")
    got: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    events = []
    for t, v in zip(ts, vals, strict=True):
        o = eng.process_one(float(t), list(v), reuse=True)
        for k in keys:
            got[k].append(getattr(o, k).copy())
        events += o.events
    _assert_same(_cat([whole]), {k: np.concatenate(v) for k, v in got.items()})
    assert events == whole.events


@settings(max_examples=40, deadline=None)
@given(streams(max_rows=200), st.integers(0, 200), st.sampled_from([FAST, NOVEL]))
def test_save_restore_continue(s: tuple, cut: int, cfg: EngineConfig) -> None:
    ts, vals, dirs = s
    d = dict(zip(METRICS, dirs, strict=True))
    whole = Engine(METRICS, cfg, d).process(ts, vals)
    cut = min(cut, len(ts))
    first = Engine(METRICS, cfg, d)
    a = first.process(ts[:cut], vals[:cut])
    blob = first.state()
    assert len(blob) <= 4096 * len(METRICS)
    second = Engine.from_state(blob, METRICS, cfg)
    b = second.process(ts[cut:], vals[cut:])
    _assert_same(_cat([whole]), _cat([a, b]))
    assert second.state() == Engine.from_state(second.state(), METRICS, cfg).state()


@settings(max_examples=30, deadline=None)
@given(streams(), st.integers(0, 120))
def test_state_migrates_to_other_metrics(s: tuple, cut: int) -> None:
    """An upgrade adding metric "c" (and dropping none, or dropping "a") keeps what the shared
    metrics learnt: they continue exactly as without the upgrade; the new one starts learning."""
    ts, vals, dirs = s
    d = dict(zip(METRICS, dirs, strict=True))
    cut = min(cut, len(ts))
    first = Engine(METRICS, FAST, d)
    first.process(ts[:cut], vals[:cut])
    blob = first.state()
    plain = Engine.from_state(blob, METRICS, FAST).process(ts[cut:], vals[cut:])
    for new in (("a", "b", "c"), ("c", "b")):
        eng = Engine.from_state(blob, new, FAST, saved_metrics=METRICS)
        assert eng.metrics == new
        cols = [vals[cut:, METRICS.index(m)] if m in METRICS else np.full(len(ts) - cut, np.nan)
                for m in new]
        got = eng.process(ts[cut:], np.column_stack(cols))
        for j, m in enumerate(new):
            if m in METRICS:
                i = METRICS.index(m)
                for k in ("scores", "persistence", "baseline", "spread", "level"):
                    npt.assert_array_equal(getattr(got, k)[:, j], getattr(plain, k)[:, i], err_msg=f"{m} {k}")
            else:
                assert not np.any(got.persistence[:, j]), "the new metric starts learning"
    with pytest.raises(ValueError, match="expected"):
        Engine.from_state(blob, ("a", "b", "c"), FAST)  # without the saved names: refused, not misread


@pytest.mark.parametrize(("magic", "n_old"), [(b"ELE2", 116), (b"ELE3", 118), (b"ELE4", 190)])
def test_an_old_state_is_upgraded_not_refused(magic: bytes, n_old: int) -> None:
    """Agents that saved ELE2 (before the envelope), ELE3 (before the daily envelope) or ELE4
    (before the pattern novelty) keep their baselines after the upgrade; the missing parts
    start empty."""
    from device.detect.engine import _HEADER
    from device.kernels import layout as K

    eng = Engine(METRICS, FAST)
    rng = np.random.default_rng(1)
    ts = 1.6e9 + 60.0 * np.arange(3000)
    eng.process(ts, rng.normal(50, 2, (3000, 2)))
    st_ = eng._st.copy()
    old = _HEADER.pack(magic, 2, n_old) + st_[:, :n_old].tobytes() + eng._eng.tobytes()
    up = Engine.from_state(old, METRICS, FAST)
    npt.assert_array_equal(up._st[:, :n_old], eng._st[:, :n_old])
    assert not up._st[:, n_old:].any() and not up.warming_up
    assert K.N_STATE * 8 <= 4096  # state budget: <= 4 KB per metric
    with pytest.raises(ValueError, match="expected"):
        Engine.from_state(old[:-8], METRICS, FAST)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 80), elements=st.floats(allow_nan=True, allow_infinity=True)),
    arrays(np.float64, (80, 2), elements=st.floats(allow_nan=True, allow_infinity=True)),
)
def test_garbage_never_gives_nan_or_raises(ts: np.ndarray, vals: np.ndarray) -> None:
    vals = vals[: ts.size]
    for cfg in (FAST, EngineConfig()):
        out = Engine(METRICS, cfg).process(ts, vals)
        for arr in (out.scores, out.persistence, out.combined):
            assert np.all(np.isfinite(arr))
            assert np.all((arr >= 0.0) & (arr <= 1.0))
        assert out.flags.dtype == np.uint8


def test_flags() -> None:
    t0 = 1_704_067_200.0
    ts = t0 + np.array([0.0, 60, 60, 30, 120, 120 + 4 * 3600, 120 + 100 * 86400, np.nan])
    vals = np.ones((8, 1))
    vals[1, 0] = np.nan
    out = Engine(("x",)).process(ts, vals)
    assert out.flags.tolist() == [8, 9, 10, 10, 8, 12, 28, 10]


def test_warm_up_is_documented_length() -> None:
    cfg = EngineConfig()
    ts = 1_704_067_200.0 + 60.0 * np.arange(2 * 1440)
    eng = Engine(("x",), cfg)
    out = eng.process(ts, np.random.default_rng(0).normal(size=(ts.size, 1)))
    first_warm = int(np.argmax((out.flags & 8) == 0))
    assert first_warm == int(cfg.warmup_s / 60)  # one day of minute rows
    assert not eng.warming_up
    assert np.all(out.combined[:first_warm] == 0.0)


def test_state_is_small() -> None:
    eng = Engine(("heart_rate", "resting_hr", "activity"))
    assert len(eng.state()) <= 4096 * 3


@pytest.mark.parametrize(
    ("ts", "vals", "match"),
    [
        (np.zeros(3), np.zeros((3, 3)), r"values of shape \(n, 2\)"),
        (np.zeros((3, 1)), np.zeros((3, 2)), "ts of shape"),
    ],
)
def test_input_errors_say_what_was_expected(ts: np.ndarray, vals: np.ndarray, match: str) -> None:
    with pytest.raises(EngineInputError, match=match):
        Engine(METRICS).process(ts, vals)


def test_constructor_errors() -> None:
    with pytest.raises(EngineInputError, match="non-empty"):
        Engine("abc")
    with pytest.raises(EngineInputError, match="unknown metrics"):
        Engine(METRICS, directions={"z": 1})
    with pytest.raises(EngineInputError, match="-1, 0 or"):
        Engine(METRICS, directions={"a": 2})
    with pytest.raises(EngineInputError, match="memory_s"):
        EngineConfig(memory_s=-1.0)
    with pytest.raises(EngineInputError, match="expected 2 values"):
        Engine(METRICS).process_one(0.0, [1.0])
