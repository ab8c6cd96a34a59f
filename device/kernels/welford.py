"""Exponentially-forgetting weighted Welford statistics: update and merge kernels.

A statistic is three floats ``(w, mean, m2)``: total weight, weighted mean and weighted sum of
squared deviations (variance = m2 / w). Forgetting multiplies ``w`` and ``m2`` by
``exp(-dt / memory)``, which keeps merges exact: ``merge(a, b)`` equals feeding a's and b's
samples into one statistic (Chan et al. parallel formula).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from device.kernels import config


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _decay_kernel(w: float, m2: float, dt: float, memory: float) -> tuple[float, float]:
    """Return ``(w, m2)`` forgotten over ``dt`` seconds with time constant ``memory``."""
    if dt <= 0.0 or memory <= 0.0:
        return w, m2
    f = np.exp(-dt / memory)
    return w * f, m2 * f


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _update_kernel(
    w: float, mean: float, m2: float, x: float, u: float
) -> tuple[float, float, float]:
    """Add sample ``x`` with weight ``u`` to ``(w, mean, m2)`` (weighted Welford)."""
    if u <= 0.0:
        return w, mean, m2
    w_new = w + u
    delta = x - mean
    mean_new = mean + u * delta / w_new
    m2_new = m2 + u * delta * (x - mean_new)
    if m2_new < 0.0:
        m2_new = 0.0
    return w_new, mean_new, m2_new


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _merge_kernel(
    wa: float, ma: float, sa: float, wb: float, mb: float, sb: float
) -> tuple[float, float, float]:
    """Merge two statistics ``(w, mean, m2)`` into one (Chan's parallel formula)."""
    w = wa + wb
    if w <= 0.0:
        return 0.0, 0.0, 0.0
    delta = mb - ma
    mean = ma + delta * wb / w
    m2 = sa + sb + delta * delta * wa * wb / w
    return w, mean, m2
