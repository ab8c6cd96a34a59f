"""Time step, smoothed deviation, warm-up, CUSUM persistence and contamination protection.

Per row the clock advances (:func:`_time_step`: flags for repeats, gaps and clock jumps); per
metric the clipped ``z`` is smoothed (EWMA, ``smooth_s``) and standardised by its own long-run
RMS into ``zs`` (:func:`_smooth`); once warm (:func:`_warm_up`) a two-sided CUSUM on ``zs`` in
z-hours gives the persistence (:func:`_cusum`, :func:`_persistence`); while a deviation persists
the baseline learns with a small weight, for at most ``protect_max_s`` (:func:`_protect_weight`).

The helpers take and return scalars (pure, compiled inline into the row kernel: no array
reference counting per call); :mod:`device.kernels.deviation` reads and writes the state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from device.kernels import config
from device.kernels.circadian import _clip
from device.kernels.layout import FLAG_CLOCK, FLAG_GAP, FLAG_ORDER, N_BINS
from device.kernels.welford import _decay_kernel

_JIT: dict[str, Any] = {"cache": True, "fastmath": config.EDGELOOP_FASTMATH, "inline": "always"}


@njit(**_JIT)
def _time_step(
    t: float, tprev: float, nrows: float, unit_s: float, jump_s: float, cap_s: float,
    gap_s: float,
) -> tuple[bool, int, float]:  # fmt: skip
    """``(ok, flags, dt)`` of a row at ``t`` after ``nrows`` accepted rows, the last at ``tprev``.

    Not ok (flag 2): ``t`` is not finite, or repeats / precedes the previous row. A step beyond
    ``jump_s`` either way is a clock jump (flags 16 + 4), accepted as the new clock with the step
    ``cap_s``; a step beyond ``gap_s`` is a gap (flag 4). The first row's step is ``unit_s``;
    ``dt`` is capped at ``cap_s``.
    """
    flags = 0
    ok = True
    dt = unit_s
    if not np.isfinite(t):
        flags |= FLAG_ORDER
        ok = False
    elif nrows > 0:
        dt = t - tprev
        if dt > jump_s or dt < -jump_s:
            flags |= FLAG_CLOCK | FLAG_GAP
            dt = cap_s
        elif dt <= 0.0:
            flags |= FLAG_ORDER
            ok = False
        elif dt > gap_s:
            flags |= FLAG_GAP
    if dt > cap_s:
        dt = cap_s
    return ok, flags, dt


@njit(**_JIT)
def _hour(t: float) -> int:
    """Hour of day (UTC) of epoch seconds ``t``; 0 for a non-finite ``t``."""
    hh = 0
    if np.isfinite(t):
        hh = int((t % 86400.0) // 3600.0)
        if hh < 0 or hh >= N_BINS:
            hh = 0
    return hh


@njit(**_JIT)
def _smooth(
    e: float, ew: float, eq: float, since: float, z: float, alpha: float, z_clip: float,
    memory: float, prior_w: float, prior_rms: float, rms_floor: float,
) -> tuple[float, float, float, float]:  # fmt: skip
    """``(e, ew, eq, rms)``: ``z`` (clipped) smoothed into ``e`` with weight ``alpha``; the RMS
    statistic ``(ew, eq)`` forgotten over ``since`` seconds, and the RMS of ``e`` it gives
    (prior ``prior_rms`` with weight ``prior_w``, floored). ``zs = e / rms``."""
    e += alpha * (_clip(z, -z_clip, z_clip) - e)
    ew, eq = _decay_kernel(ew, eq, since, memory)
    rms = math.sqrt((eq + prior_w * prior_rms**2) / (ew + prior_w))
    if rms < rms_floor:
        rms = rms_floor
    return e, ew, eq, rms


@njit(**_JIT)
def _learn_smooth(
    e: float, ew: float, eq: float, rms: float, u: float, huber_c: float
) -> tuple[float, float]:
    """The RMS statistic ``(ew, eq)`` learns ``e`` (winsorised at ``huber_c`` RMS), weight ``u``."""
    ec = _clip(e, -huber_c * rms, huber_c * rms)
    return ew + u, eq + u * ec * ec


@njit(**_JIT)
def _warm_up(
    warm: float, nvalid: float, first: float, t: float, warmup_n: float, warmup_s: float
) -> bool:
    """Warm (stays warm) once ``warmup_s`` passed since the first valid sample and this is the
    ``warmup_n``-th one."""
    return warm != 0.0 or (nvalid + 1.0 >= warmup_n and t - first >= warmup_s)


@njit(**_JIT)
def _cusum(
    sp: float, sn: float, rsp: float, rsn: float, zs: float, dt_h: float, t: float, k: float,
    zs_clip: float, cap: float,
) -> tuple[float, float, float, float]:  # fmt: skip
    """Two-sided CUSUM on ``zs`` (clipped) in z-hours, allowance ``k``, sums capped at ``cap``:
    ``(sp, sn, rsp, rsn)``; a run's start time is kept while its sum stays above zero."""
    zsc = _clip(zs, -zs_clip, zs_clip)
    p = max(0.0, sp + (zsc - k) * dt_h)
    n = max(0.0, sn + (-zsc - k) * dt_h)
    if sp == 0.0 and p > 0.0:
        rsp = t
    if sn == 0.0 and n > 0.0:
        rsn = t
    return min(p, cap), min(n, cap), rsp, rsn


@njit(**_JIT)
def _protect_weight(
    pmax: float, since: float, t: float, protect_p: float, protect_max_s: float,
    protect_weight: float,
) -> tuple[float, float]:  # fmt: skip
    """``(learning weight factor, protected since)``: ``protect_weight`` while the larger CUSUM
    side ``pmax`` (in units of the threshold) is at ``protect_p`` or more (sick must not become
    normal), for at most ``protect_max_s`` since it got there (``since``, NaN when not); else 1."""
    protected = False
    if pmax >= protect_p:
        if not np.isfinite(since):
            since = t
        protected = (t - since) < protect_max_s
    else:
        since = np.nan
    return (protect_weight if protected else 1.0), since


@njit(**_JIT)
def _persistence(
    sp: float, sn: float, rsp: float, rsn: float, d: float, h: float
) -> tuple[float, float, float]:
    """``(persistence in [0, 1], run start, sign)`` of the side that counts (direction ``d``;
    undirected: the larger side, up on a tie), CUSUM threshold ``h``."""
    pp = sp / h
    pn = sn / h
    if d > 0.0 or (d == 0.0 and pp >= pn):
        p, start, sign = pp, rsp, 1.0
    else:
        p, start, sign = pn, rsn, -1.0
    if p > 1.0:
        p = 1.0
    return p, start, sign
