"""Each named @njit helper of the deviation kernel against its plain-Python twin (tests/naive.py).

The helpers are pure functions of scalars (except the daily envelope, which updates 72 slots of a
state row, and the decider, which reads a row of outputs), so hypothesis feeds both the same
arguments, NaN and inf included, and compares every returned value.
"""

from __future__ import annotations

import math

import naive
import numpy as np
import numpy.testing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from device.kernels import config, decide, evidence, novelty, persistence, surprise
from device.kernels import layout as L

TOL = {"rtol": config.EDGELOOP_TEST_RTOL, "atol": config.EDGELOOP_TEST_ATOL}
T0 = 1_704_067_200.0
real = st.floats(-1e6, 1e6)
pos = st.floats(1e-3, 1e6)
times = st.one_of(st.floats(T0 - 1e7, T0 + 1e7), st.sampled_from([math.nan, math.inf]))


def _same(got: object, want: object) -> None:
    g = np.atleast_1d(np.asarray(got, dtype=np.float64))
    w = np.atleast_1d(np.asarray(want, dtype=np.float64))
    npt.assert_allclose(g, w, equal_nan=True, **TOL)


@settings(max_examples=200, deadline=None)
@given(times, times, st.sampled_from([0.0, 1.0, 7.0]), pos, pos, pos, pos)
def test_time_step(t: float, tprev: float, nrows: float, unit: float, jump: float, cap: float,
                   gap: float) -> None:  # fmt: skip
    got = persistence._time_step(t, tprev, nrows, unit, jump, cap, gap)
    want = naive.time_step(t, tprev, nrows, unit, jump, cap, gap)
    assert (got[0], got[1]) == (want[0], want[1])
    if want[0]:  # the step of a rejected row is never used
        _same(got[2], want[2])


@settings(max_examples=100, deadline=None)
@given(times)
def test_hour(t: float) -> None:
    assert persistence._hour(t) == naive.hour(t)


@settings(max_examples=200, deadline=None)
@given(st.tuples(real, st.floats(0, 1e6), st.floats(0, 1e6), st.floats(0, 1e7), real,
                 st.floats(0, 1), pos, pos, pos, pos, st.floats(0, 10)))
def test_smooth(args: tuple) -> None:
    _same(persistence._smooth(*args), naive.smooth(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(real, st.floats(0, 1e6), st.floats(0, 1e6), pos, st.floats(0, 100), pos))
def test_learn_smooth(args: tuple) -> None:
    _same(persistence._learn_smooth(*args), naive.learn_smooth(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.sampled_from([0.0, 1.0]), st.floats(0, 1e4), times, times, st.floats(0, 1e4), pos))
def test_warm_up(args: tuple) -> None:
    assert persistence._warm_up(*args) == naive.warm_up(*args)


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.one_of(st.just(0.0), pos), st.one_of(st.just(0.0), pos), times, times, real,
       st.floats(0, 10), times, st.floats(0, 5), pos, pos))  # fmt: skip
def test_cusum(args: tuple) -> None:
    _same(persistence._cusum(*args), naive.cusum(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.floats(0, 3), st.one_of(times, st.just(math.nan)), times, st.floats(0, 1), pos,
       st.floats(0, 1)))  # fmt: skip
def test_protect_weight(args: tuple) -> None:
    _same(persistence._protect_weight(*args), naive.protect_weight(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.floats(0, 1e3), st.floats(0, 1e3), times, times, st.sampled_from([-1.0, 0.0, 1.0]), pos))
def test_persistence(args: tuple) -> None:
    _same(persistence._persistence(*args), naive.persistence(*args))


@settings(max_examples=200, deadline=None)
@given(real, st.sampled_from([-1.0, 0.0, 1.0]))
def test_directed(v: float, d: float) -> None:
    _same(evidence._directed(v, d), naive.directed(v, d))


@settings(max_examples=200, deadline=None)
@given(st.tuples(real, real, st.floats(0, 100), st.floats(0, 100), st.floats(0, 2), pos))
def test_envelope_evidence(args: tuple) -> None:
    _same(evidence._envelope_evidence(*args), naive.envelope_evidence(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(real, st.floats(0, 100), st.floats(0, 100), pos))
def test_envelope_record(args: tuple) -> None:
    _same(evidence._envelope_record(*args), naive.envelope_record(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(real, st.floats(0.1, 10), real, pos))
def test_spike_score(args: tuple) -> None:
    _same(evidence._spike_score(*args), naive.spike_score(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(real, st.sampled_from([-1.0, 0.0, 1.0]), st.floats(0.1, 10), st.floats(0, 100),
       st.floats(0, 100), pos))  # fmt: skip
def test_sustained_evidence(args: tuple) -> None:
    _same(evidence._sustained_evidence(*args), naive.sustained_evidence(*args))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0, 50), min_size=24, max_size=24),
    st.lists(st.floats(T0 - 2e6, T0), min_size=24, max_size=24),
    st.lists(st.floats(0, 50), min_size=24, max_size=24),
    st.lists(st.floats(T0 - 2e6, T0), min_size=24, max_size=24),
    st.integers(0, 23), st.floats(T0, T0 + 1e5), st.floats(-100, 100), st.floats(0, 100),
    st.floats(0, 20), st.floats(0, 20), st.sampled_from([0.0, 86400.0, 7 * 86400.0]),
    st.floats(1, 20), st.floats(0, 1.5), st.floats(0, 1), st.floats(1, 40),
)  # fmt: skip
def test_daily_envelope(denv: list, dtime: list, dconf: list, bin_t: list, hh: int, t: float,
                        z: float, zd: float, env: float, ev: float, memory: float, big_z: float,
                        factor: float, env_factor: float, clip: float) -> None:  # fmt: skip
    s = np.zeros(L.N_STATE)
    s[L.D_ENV : L.D_ENV + 24] = denv
    s[L.D_TIME : L.D_TIME + 24] = dtime
    s[L.D_CONF : L.D_CONF + 24] = dconf
    s[L.BIN_T : 4 * L.N_BINS : 4] = bin_t
    got = evidence._daily_envelope(s, hh, t, z, zd, env, ev, memory, big_z, factor, env_factor, clip)
    want = naive.daily_envelope(denv, dtime, dconf, bin_t, hh, t, z, zd, env, ev, memory, big_z,
                                factor, env_factor, clip)  # fmt: skip
    _same(got, want)
    _same(s[L.D_ENV : L.D_ENV + 24], denv)
    _same(s[L.D_TIME : L.D_TIME + 24], dtime)
    _same(s[L.D_CONF : L.D_CONF + 24], dconf)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e5), st.floats(1e-3, 1e5))
def test_typical_step(step: float, dt: float) -> None:
    _same(surprise._typical_step(step, dt), naive.typical_step(step, dt))


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(0, 1e4), st.floats(0, 1e5),
                 st.floats(0, 100), st.floats(0, 1e4), st.booleans(), pos, st.floats(1e-3, 1), pos))
def test_surprise(args: tuple) -> None:
    _same(surprise._surprise(*args), naive.surprise(*args))


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1e5), pos, st.floats(0, 1),
       st.floats(0, 1), st.floats(0, 1)))  # fmt: skip
def test_refractory(args: tuple) -> None:
    _same(surprise._refractory(*args), naive.refractory(*args))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.floats(-10, 10)), min_size=1, max_size=5),
    st.booleans(), st.one_of(st.just(-math.inf), st.floats(T0 - 1e5, T0)),
    st.floats(T0, T0 + 1e5), st.floats(0, 1), st.floats(0, 2), st.floats(0, 1e5), pos,
)  # fmt: skip
def test_decide(metrics: list, armed: bool, lastev: float, t: float, contrib_p: float,
                event_sum: float, cooldown: float, zs_clip: float) -> None:  # fmt: skip
    m = len(metrics)
    out = np.zeros((L.N_OUT, 1, m))
    out[L.O_WARM, 0] = [float(w) for w, _, _ in metrics]
    out[L.O_PERS, 0] = [p for _, p, _ in metrics]
    out[L.O_ZS, 0] = [z for _, _, z in metrics]
    rows = np.full((L.N_ROW, 1), np.nan)
    eng = np.zeros(L.N_ENG)
    eng[L.E_ARMED], eng[L.E_LASTEV] = float(armed), lastev
    decide._decide(eng, t, 0, out, rows, 0, contrib_p, event_sum, cooldown, zs_clip)
    fired, score, contrib, armed2, lastev2 = naive.decide(
        armed, lastev, t, [w for w, _, _ in metrics], out[L.O_PERS, 0].tolist(),
        out[L.O_ZS, 0].tolist(), contrib_p, event_sum, cooldown, zs_clip)  # fmt: skip
    assert bool(rows[L.R_EVENT, 0]) == fired
    _same(rows[L.R_ESCORE, 0], score)
    assert out[L.O_CONTRIB, 0].astype(bool).tolist() == contrib
    assert (bool(eng[L.E_ARMED]), eng[L.E_LASTEV]) == (armed2, lastev2)
    # a rejected row (flag 2) neither fires nor re-arms
    eng[L.E_ARMED] = 0.0
    decide._decide(eng, t + 1e6, L.FLAG_ORDER, out, rows, 0, contrib_p, 0.0, 0.0, zs_clip)
    assert rows[L.R_EVENT, 0] == 0.0 and eng[L.E_ARMED] == 0.0


def test_layout_offsets_follow_the_names() -> None:
    """The state layout is generated from its names: offsets are consecutive, widths add up."""
    offs = sorted(L.STATE_OFFSETS.items(), key=lambda kv: kv[1])
    widths = dict(L.STATE_FIELDS)
    for (name, at), (_, nxt) in zip(offs, offs[1:] + [("end", L.N_STATE)], strict=True):
        assert nxt - at == widths[name]
    assert len(L.CFG_FIELDS) == L.N_CFG and len(set(L.CFG_FIELDS)) == L.N_CFG
    assert L.N_STATE * 8 <= 4096


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(30, 400), st.floats(-8, 8)), min_size=1, max_size=150),
       st.floats(60, 900), st.floats(0.5, 0.99), st.floats(0.01, 0.5), st.floats(600, 1e5),
       st.floats(8, 20))  # fmt: skip
def test_novelty(steps: list, seg_s: float, vigilance: float, rate: float, memory: float,
                 min_segments: float) -> None:  # fmt: skip
    """The pattern-novelty channel, sample by sample, against NaiveNovelty."""
    s = np.zeros(L.N_STATE)
    ref = naive.NaiveNovelty()
    t = T0
    for dt, z in steps:
        t += dt
        got = novelty._novelty(s, t, z, seg_s, vigilance, rate, memory, min_segments)
        want = ref.add(t, z, seg_s, vigilance, rate, memory, min_segments)
        _same(got, want)
    _same(s[L.NV_NMEAN], ref.nmean)
    assert s[L.NV_NSEG] == ref.n_segments
