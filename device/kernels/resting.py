"""Resting heart rate kernel (Mishra et al. 2020): minute HR where the steps were zero.

Inputs are sorted by time and NaN-free (the wrapper :func:`device.features.resting_hr.resting_hr`
sees to that). A minute ``M`` is *quiet* when steps were recorded for each of the ``quiet``
minutes ``M - quiet + 1 .. M`` and all of them were zero; missing step minutes are not quiet.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from device.kernels import config


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _resting_hr_kernel(
    ts_hr: np.ndarray, hr: np.ndarray, ts_steps: np.ndarray, steps: np.ndarray, quiet: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(minute_ts, mean_hr)`` for quiet minutes (minute_ts = start of the minute)."""
    ns = ts_steps.shape[0]
    # minute index and length of the run of consecutive zero-step minutes ending at each row
    smin = np.empty(ns, dtype=np.int64)
    run = np.zeros(ns, dtype=np.int64)
    for i in range(ns):
        smin[i] = np.int64(np.floor(ts_steps[i] / 60.0))
        if steps[i] == 0.0:
            if i > 0 and run[i - 1] > 0 and smin[i] == smin[i - 1] + 1:
                run[i] = run[i - 1] + 1
            elif i > 0 and smin[i] == smin[i - 1]:
                run[i] = run[i - 1]  # duplicate minute: keep the run
            else:
                run[i] = 1
        else:
            run[i] = 0
    n = ts_hr.shape[0]
    out_t = np.empty(n, dtype=np.float64)
    out_v = np.empty(n, dtype=np.float64)
    k = 0
    j = 0
    i = 0
    while i < n:
        mi = np.int64(np.floor(ts_hr[i] / 60.0))
        total = 0.0
        cnt = 0
        while i < n and np.int64(np.floor(ts_hr[i] / 60.0)) == mi:
            total += hr[i]
            cnt += 1
            i += 1
        while j < ns and smin[j] < mi:
            j += 1
        # last step row of this minute (duplicates: the run of the last one decides)
        jj = j
        while jj + 1 < ns and smin[jj + 1] == mi:
            jj += 1
        if jj < ns and smin[jj] == mi and run[jj] >= quiet:
            out_t[k] = mi * 60.0
            out_v[k] = total / cnt
            k += 1
    return out_t[:k], out_v[:k]
