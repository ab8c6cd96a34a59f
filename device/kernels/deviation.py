"""The deviation kernel: circadian robust baseline, instantaneous and persistence scores, events.

One call processes ``n`` rows of ``m`` metrics and mutates the packed state in place, so a stream
scored in one batch or in any chunking gives bit-identical output. Everything the kernel needs is
a float64 array; the layout (:mod:`device.kernels.layout`) is shared with the thin wrapper
(:mod:`device.detect.engine`) and the plain-Python twin (``tests/naive.py``).

Per row (:func:`_score_kernel`): the clock advances (:func:`~device.kernels.persistence._time_step`);
per metric (:func:`_score_metric`):

1. baseline ``b`` and spread ``s`` (:mod:`device.kernels.circadian`);
2. ``z = (x - b) / s``; spike score (:func:`~device.kernels.evidence._spike_score`);
3. smoothed deviation ``zs`` and CUSUM persistence (:mod:`device.kernels.persistence`);
4. the evidence for the combined score (:mod:`device.kernels.evidence`);
5. the baseline learns a winsorised ``x``, with weight ``protect_weight`` while a deviation
   persists (contamination protection).

Then the combined score (:mod:`device.kernels.surprise`). Deciding is apart
(:mod:`device.kernels.decide`): :func:`_process_kernel` scores, then decides.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from device.kernels import config
from device.kernels.cache import drop_stale
from device.kernels.circadian import _baseline_kernel, _learn_kernel
from device.kernels.decide import _decide
from device.kernels.evidence import (
    _daily_envelope,
    _directed,
    _envelope_evidence,
    _envelope_record,
    _spike_score,
    _sustained_evidence,
)
from device.kernels.layout import (
    C_CAP,
    C_CONTRIB,
    C_COOL,
    C_DENVF,
    C_DENVS,
    C_DENVZ,
    C_EFLOOR,
    C_ENVF,
    C_ENVS,
    C_EPRMS,
    C_EPW,
    C_EVSUM,
    C_GAP,
    C_H,
    C_HUBER,
    C_JUMP,
    C_K,
    C_MAXABS,
    C_MEM,
    C_NVMEM,
    C_NVMIN,
    C_NVRATE,
    C_NVSEG,
    C_NVVIG,
    C_PROTMAX,
    C_PROTP,
    C_PROTW,
    C_REFR,
    C_REFRF,
    C_REFRL,
    C_REFRM,
    C_SFLOOR,
    C_SLONG,
    C_SMOOTH,
    C_SSCALE,
    C_SSHORT,
    C_SSTEP,
    C_SURSCALE,
    C_SZCLIP,
    C_WARMN,
    C_WARMS,
    C_WCAP,
    C_WUNIT,
    C_Z0,
    C_ZCLIP,
    C_ZSCLIP,
    E_LASTCOMB,
    E_LM2,
    E_LMEAN,
    E_LW,
    E_NROWS,
    E_PEAK,
    E_SHORT,
    E_STEP,
    E_TPREV,
    FLAG_MISSING,
    FLAG_WARMUP,
    M_DIR,
    M_E,
    M_ENVN,
    M_ENVP,
    M_EQ,
    M_EW,
    M_FIRST,
    M_LEVEL,
    M_NVALID,
    M_PROT,
    M_RSNEG,
    M_RSPOS,
    M_SCALE,
    M_SNEG,
    M_SPOS,
    M_TLAST,
    M_WARM,
    M_ZS,
    N_CFG,
    N_ENG,
    N_OUT,
    N_ROW,
    N_STATE,
    O_BASE,
    O_CONTRIB,
    O_DIR,
    O_LEVEL,
    O_NOVEL,
    O_PERS,
    O_SCORE,
    O_SD,
    O_START,
    O_WARM,
    O_ZS,
    R_COMB,
)
from device.kernels.novelty import _novelty
from device.kernels.persistence import (
    _cusum,
    _hour,
    _learn_smooth,
    _persistence,
    _protect_weight,
    _smooth,
    _time_step,
    _warm_up,
)
from device.kernels.surprise import _refractory, _surprise, _typical_step
from device.kernels.welford import _decay_kernel, _update_kernel

__all__ = ["_process_kernel", "_score_row", "_step_kernel"]
_JIT: dict[str, Any] = {"cache": True, "fastmath": config.EDGELOOP_FASTMATH, "inline": "always"}


@njit(**_JIT)
def _score_metric(
    cfg: np.ndarray, s: np.ndarray, ok: bool, finite: bool, t: float, tq: float, x: float,
    hh: int, dt_h: float, alpha: float, u_time: float, out: np.ndarray, i: int, j: int,
) -> tuple[float, float, bool, float]:  # fmt: skip
    """Score metric ``j`` of row ``i`` into ``out`` and learn; ``(ev, ev_l, warm, novel)``: its
    evidence for the combined score (``ev_l`` before the daily discount), whether it is warm,
    and the pattern novelty z of a segment this sample closed (NaN: none).

    ``s``: the metric's state row; ``ok``: the row was accepted; ``finite``: ``x`` is a usable
    value; ``tq``: the time the baseline is read at (the row's, or the last accepted row's)."""
    d = s[M_DIR]
    scale = s[M_SCALE]
    h_eff = cfg[C_H] * scale
    base, sd = _baseline_kernel(cfg, s, hh, tq)
    if not np.isfinite(base):
        base = x if finite else 0.0
    score = 0.0
    ev = 0.0
    ev_l = 0.0
    novel = np.nan
    if ok and finite:
        z = (x - base) / sd
        novel = _novelty(s, t, z, cfg[C_NVSEG], cfg[C_NVVIG], cfg[C_NVRATE], cfg[C_NVMEM],
                         cfg[C_NVMIN])  # fmt: skip
        if s[M_NVALID] == 0.0:
            s[M_FIRST] = t
            s[M_LEVEL] = x
        else:  # the envelopes forget over the time since the last valid sample
            fenv = math.exp(-(t - s[M_TLAST]) / cfg[C_ENVS])
            s[M_ENVP] *= fenv
            s[M_ENVN] *= fenv
        e, ew, eq, rms = _smooth(s[M_E], s[M_EW], s[M_EQ], t - s[M_TLAST], z, alpha,
                                 cfg[C_ZCLIP], cfg[C_MEM], cfg[C_EPW], cfg[C_EPRMS],
                                 cfg[C_EFLOOR])  # fmt: skip
        s[M_E] = e
        s[M_ZS] = e / rms
        if _warm_up(s[M_WARM], s[M_NVALID], s[M_FIRST], t, cfg[C_WARMN], cfg[C_WARMS]):
            s[M_WARM] = 1.0
            s[M_SPOS], s[M_SNEG], s[M_RSPOS], s[M_RSNEG] = _cusum(
                s[M_SPOS], s[M_SNEG], s[M_RSPOS], s[M_RSNEG], s[M_ZS], dt_h, t, cfg[C_K],
                cfg[C_ZSCLIP], h_eff * cfg[C_CAP])  # fmt: skip
            zd = _directed(z, d)
            ev, env = _envelope_evidence(z, zd, s[M_ENVP], s[M_ENVN], cfg[C_ENVF], cfg[C_SZCLIP])
            ev_l = ev
            ev = _daily_envelope(s, hh, t, z, zd, env, ev, cfg[C_DENVS], cfg[C_DENVZ],
                                 cfg[C_DENVF], cfg[C_ENVF], cfg[C_SZCLIP])  # fmt: skip
            s[M_ENVP], s[M_ENVN] = _envelope_record(z, s[M_ENVP], s[M_ENVN], cfg[C_SZCLIP])
            score = _spike_score(zd, scale, cfg[C_Z0], cfg[C_SSCALE])
        w, s[M_PROT] = _protect_weight(max(s[M_SPOS], s[M_SNEG]) / h_eff, s[M_PROT], t,
                                       cfg[C_PROTP], cfg[C_PROTMAX], cfg[C_PROTW])  # fmt: skip
        u = u_time * w
        _learn_kernel(cfg, s, hh, t, x, base, sd, u)
        s[M_EW], s[M_EQ] = _learn_smooth(e, ew, eq, rms, u, cfg[C_HUBER])
        s[M_LEVEL] += alpha * (x - s[M_LEVEL])
        s[M_NVALID] += 1.0
        s[M_TLAST] = t
    p, start, sign = _persistence(s[M_SPOS], s[M_SNEG], s[M_RSPOS], s[M_RSNEG], d, h_eff)
    warm = s[M_WARM] != 0.0
    out[O_SCORE, i, j] = score
    out[O_PERS, i, j] = p
    out[O_BASE, i, j] = base
    out[O_SD, i, j] = sd
    out[O_LEVEL, i, j] = s[M_LEVEL] if s[M_NVALID] > 0.0 else base
    out[O_START, i, j] = start
    out[O_DIR, i, j] = sign
    out[O_CONTRIB, i, j] = 0.0
    out[O_ZS, i, j] = s[M_ZS]
    out[O_WARM, i, j] = 1.0 if warm else 0.0
    out[O_NOVEL, i, j] = novel if np.isfinite(novel) else 0.0
    if warm:
        ev, ev_l = _sustained_evidence(s[M_ZS], d, scale, ev, ev_l, cfg[C_SZCLIP])
    return ev, ev_l, warm, novel


@njit(**_JIT)
def _score_row(
    cfg: np.ndarray,
    st: np.ndarray,
    eng: np.ndarray,
    ts: np.ndarray,
    vals: np.ndarray,
    out: np.ndarray,
    rows: np.ndarray,
    i: int,
) -> int:
    """Score row ``i`` causally (no deciding), updating ``st`` (m, N_STATE) and ``eng``; writes
    ``out[:, i]`` and ``rows[R_COMB, i]``, returns the row's flags."""
    t = ts[i]
    ok, flags, dt = _time_step(t, eng[E_TPREV], eng[E_NROWS], cfg[C_WUNIT], cfg[C_JUMP],
                               cfg[C_WCAP], cfg[C_GAP])  # fmt: skip
    if ok:
        eng[E_TPREV] = t
        eng[E_NROWS] += 1.0
    u_time = dt / cfg[C_WUNIT]
    dt_h = dt / 3600.0
    alpha = 1.0 - math.exp(-dt / cfg[C_SMOOTH])
    hh = _hour(t)
    tq = t if ok else eng[E_TPREV]
    raw = 0.0
    raw_l = 0.0  # the evidence before the daily discount: what the long-run statistic learns
    any_warm = False
    novel = 0.0  # the largest pattern novelty z of a warm metric's closed segment
    for j in range(vals.shape[1]):
        x = vals[i, j]
        finite = np.isfinite(x) and abs(x) <= cfg[C_MAXABS]
        if not finite:
            flags |= FLAG_MISSING
        ev, ev_l, warm, nov = _score_metric(
            cfg, st[j], ok, finite, t, tq, x, hh, dt_h, alpha, u_time, out, i, j
        )
        if warm:
            any_warm = True
            if nov > novel:  # NaN never is
                novel = nov
            if ev > raw:
                raw = ev
            if ev_l > raw_l:
                raw_l = ev_l
    if not any_warm:
        flags |= FLAG_WARMUP
    if not ok:
        rows[R_COMB, i] = eng[E_LASTCOMB]
        return flags
    # the combined score: one row weighs at most surprise_step_cap typical steps in the short
    # average (the lone row after a gap is not the whole short-term evidence)
    stp = eng[E_STEP]
    if eng[E_NROWS] > 1.0:  # the first row has no step
        stp = _typical_step(stp, dt)
        eng[E_STEP] = stp
    dts = dt
    if cfg[C_SSTEP] > 0.0 and stp > 0.0 and dts > cfg[C_SSTEP] * stp:
        dts = cfg[C_SSTEP] * stp
    lw, lm2 = _decay_kernel(eng[E_LW], eng[E_LM2], dt, cfg[C_SLONG])
    comb, eng[E_SHORT] = _surprise(eng[E_SHORT], eng[E_LMEAN], lw, lm2, raw, dts, any_warm,
                                   cfg[C_SSHORT], cfg[C_SFLOOR], cfg[C_SURSCALE])  # fmt: skip
    if novel > 0.0:  # the pattern channel, calibrated the same way: the more surprising wins
        comb_n = 1.0 - math.exp(-novel / cfg[C_SURSCALE])
        if comb_n > comb:
            comb = comb_n
    comb, eng[E_PEAK] = _refractory(comb, eng[E_PEAK], dt, cfg[C_REFR], cfg[C_REFRL],
                                    cfg[C_REFRM], cfg[C_REFRF])  # fmt: skip
    if any_warm:  # the long-run statistic learns the evidence before the daily discount
        lw, eng[E_LMEAN], lm2 = _update_kernel(lw, eng[E_LMEAN], lm2, raw_l, u_time)
    eng[E_LW] = lw
    eng[E_LM2] = lm2
    eng[E_LASTCOMB] = comb
    rows[R_COMB, i] = comb
    return flags


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _process_kernel(
    cfg: np.ndarray,
    st: np.ndarray,
    eng: np.ndarray,
    ts: np.ndarray,
    vals: np.ndarray,
    out: np.ndarray,
    rows: np.ndarray,
    flags_out: np.ndarray,
) -> None:
    """Score ``n`` rows causally, updating ``st`` (m, N_STATE) and ``eng`` in place: per row,
    score (:func:`_score_row`), then decide (:func:`device.kernels.decide._decide`).

    Writes ``out`` (N_OUT, n, m), ``rows`` (N_ROW, n) and ``flags_out`` (n,) uint8.
    """
    for i in range(ts.shape[0]):
        flags = _score_row(cfg, st, eng, ts, vals, out, rows, i)
        flags_out[i] = flags
        _decide(eng, ts[i], flags, out, rows, i, cfg[C_CONTRIB], cfg[C_EVSUM], cfg[C_COOL],
                cfg[C_ZSCLIP])  # fmt: skip


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _step_kernel(work: np.ndarray, flags: np.ndarray) -> None:
    """One row through :func:`_process_kernel`, everything packed in one array (two-arg call).

    Layout (:func:`device.kernels.layout.work_views`): ``[m, cfg, eng, state (m x N_STATE), ts,
    values (m), out (N_OUT x m), rows, spare]``; ``flags`` is a preallocated (1,) uint8 array.
    """
    m = int(work[0])
    a = 1 + N_CFG
    b = a + N_ENG
    c = b + m * N_STATE
    d = c + 1 + m
    e = d + N_OUT * m
    _process_kernel(
        work[1:a],
        work[b:c].reshape((m, N_STATE)),
        work[a:b],
        work[c : c + 1],
        work[c + 1 : d].reshape((1, m)),
        work[d:e].reshape((N_OUT, 1, m)),
        work[e : e + N_ROW].reshape((N_ROW, 1)),
        flags,
    )


# numba's cache is keyed on this file alone; the helpers compiled in live in the other modules of
# the package: drop the cached kernels when any of them changed (before anything is loaded)
_cache = getattr(_process_kernel, "_cache", None)  # None with NUMBA_DISABLE_JIT=1
if _cache is not None and hasattr(_cache, "_cache_path"):
    drop_stale(_cache._cache_path, Path(__file__).parent)
