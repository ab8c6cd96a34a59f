"""Fused run-time preprocessing kernel: resample + orientation-invariant channels in one pass.

``classifier.resample`` (``np.interp``) followed by ``classifier.features`` is the reference,
used for training and batch evaluation; this Numba kernel computes the same thing for one window
without a dozen small NumPy calls, so a prediction costs tens of microseconds, not a hundred.
``tests/test_inference.py`` checks that both agree.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def prep_kernel(x: np.ndarray, rate_in: float, rate_out: float, n_out: int) -> np.ndarray:
    """(n, 3) float64 window at ``rate_in`` -> (n_out, 4) float32 model input.

    Takes the last ``n_out / rate_out`` seconds, linearly interpolated (held at the first sample
    when the window is shorter, as ``np.interp`` does), then the channels of ``features``.
    """
    n = x.shape[0]
    r = np.empty((n_out, 3))
    t_last = (n - 1) / rate_in
    for k in range(n_out):
        pos = (t_last - (n_out - 1 - k) / rate_out) * rate_in
        if pos <= 0.0:
            for c in range(3):
                r[k, c] = x[0, c]
        elif pos >= n - 1:
            for c in range(3):
                r[k, c] = x[n - 1, c]
        else:
            i = int(pos)
            w = pos - i
            for c in range(3):
                r[k, c] = x[i, c] * (1.0 - w) + x[i + 1, c] * w
    g0 = 0.0
    g1 = 0.0
    g2 = 0.0
    for k in range(n_out):
        g0 += r[k, 0]
        g1 += r[k, 1]
        g2 += r[k, 2]
    g0 /= n_out
    g1 /= n_out
    g2 /= n_out
    gn = max(np.sqrt(g0 * g0 + g1 * g1 + g2 * g2), 1e-3)
    u0, u1, u2 = g0 / gn, g1 / gn, g2 / gn
    out = np.empty((n_out, 4), np.float32)
    for k in range(n_out):
        a0, a1, a2 = r[k, 0], r[k, 1], r[k, 2]
        mag = np.sqrt(a0 * a0 + a1 * a1 + a2 * a2)
        d0, d1, d2 = a0 - g0, a1 - g1, a2 - g2
        v = d0 * u0 + d1 * u1 + d2 * u2
        h0, h1, h2 = d0 - v * u0, d1 - v * u1, d2 - v * u2
        out[k, 0] = mag - 1.0
        out[k, 1] = v
        out[k, 2] = np.sqrt(h0 * h0 + h1 * h1 + h2 * h2)
        out[k, 3] = 1.0 - (a0 * u0 + a1 * u1 + a2 * u2) / max(mag, 1e-3)
    return out
