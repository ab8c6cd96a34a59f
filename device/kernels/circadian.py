"""The circadian robust baseline of one metric: 24 hour-of-day bins blended with a global statistic.

Both are exponentially forgetting weighted Welford statistics (:mod:`device.kernels.welford`)
kept in one state row (:mod:`device.kernels.layout`). The bin's say grows with its weight
(``w_bin / (w_bin + bin_prior)``); its spread is floored at ``bin_sd_floor`` x the global spread.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from device.kernels import config
from device.kernels.layout import (
    BIN_M2,
    BIN_MEAN,
    BIN_T,
    BIN_W,
    C_BINSD,
    C_HUBER,
    C_MEM,
    C_PRIOR,
    C_SDABS,
    C_SDREL,
    G_M2,
    G_MEAN,
    G_T,
    G_W,
)  # fmt: skip
from device.kernels.welford import _decay_kernel, _update_kernel


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH, inline="always")
def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else (hi if x > hi else x)


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _baseline_kernel(cfg: np.ndarray, s: np.ndarray, h: int, t: float) -> tuple[float, float]:
    """Blended (bin, global) baseline mean and spread for hour ``h`` at time ``t``."""
    mem = cfg[C_MEM]
    b = h * 4
    wg, m2g = _decay_kernel(s[G_W], s[G_M2], t - s[G_T], mem)
    meang = s[G_MEAN]
    floor = cfg[C_SDREL] * abs(meang) + cfg[C_SDABS]
    if wg <= config.EDGELOOP_EPS:
        return np.nan, floor
    varg = m2g / wg
    wb, m2b = _decay_kernel(s[b + BIN_W], s[b + BIN_M2], t - s[b + BIN_T], mem)
    if wb > config.EDGELOOP_EPS:
        a = wb / (wb + cfg[C_PRIOR])
        base = a * s[b + BIN_MEAN] + (1.0 - a) * meang
        var = a * (m2b / wb) + (1.0 - a) * varg
    else:
        base = meang
        var = varg
    sd = math.sqrt(var) if var > 0.0 else 0.0
    if varg > 0.0:
        floor = max(floor, cfg[C_BINSD] * math.sqrt(varg))
    if sd < floor:
        sd = floor
    return base, sd


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _learn_kernel(
    cfg: np.ndarray, s: np.ndarray, h: int, t: float, x: float, base: float, sd: float, u: float
) -> None:
    """Learn ``x`` with weight ``u`` into bin ``h`` and the global statistic of state ``s``.

    Winsorised at ``base +- huber_c * sd`` for the bin once the bin itself is mature (weight >=
    bin_prior; a young bin that differs from the global level must be free to learn it), and at
    the global mean +- huber_c global spreads for the global statistic. A collapsed spread (all
    zeros so far) never clips."""
    mem = cfg[C_MEM]
    c = cfg[C_HUBER]
    floor = cfg[C_SDREL] * abs(s[G_MEAN]) + cfg[C_SDABS]
    b = h * 4
    wb, m2b = _decay_kernel(s[b + BIN_W], s[b + BIN_M2], t - s[b + BIN_T], mem)
    xb = x
    if wb >= cfg[C_PRIOR] and sd > floor:
        xb = _clip(x, base - c * sd, base + c * sd)
    wb, mb, m2b = _update_kernel(wb, s[b + BIN_MEAN], m2b, xb, u)
    s[b + BIN_W] = wb
    s[b + BIN_MEAN] = mb
    s[b + BIN_M2] = m2b
    s[b + BIN_T] = t
    wg, m2g = _decay_kernel(s[G_W], s[G_M2], t - s[G_T], mem)
    xg = x
    if wg >= cfg[C_PRIOR]:
        sdg = math.sqrt(m2g / wg) if m2g > 0.0 else 0.0
        if sdg > floor:
            xg = _clip(x, s[G_MEAN] - c * sdg, s[G_MEAN] + c * sdg)
    wg, mg, m2g = _update_kernel(wg, s[G_MEAN], m2g, xg, u)
    s[G_W] = wg
    s[G_MEAN] = mg
    s[G_M2] = m2g
    s[G_T] = t
