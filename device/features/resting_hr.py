"""Resting heart rate as in Mishra et al. 2020: heart rate in minutes with no steps in the
preceding ``quiet_minutes`` minutes (the current minute included).

>>> import numpy as np
>>> t = 60.0 * np.arange(15)
>>> steps = np.zeros(15); steps[0] = 30.0          # a walk in minute 0
>>> ts, rhr = resting_hr(t, np.full(15, 60.0), t, steps, quiet_minutes=12)
>>> ts.tolist()                                     # minutes 12.. are the first quiet ones
[720.0, 780.0, 840.0]
"""

from __future__ import annotations

import numpy as np

from device.kernels.loader import kernels


class FeatureInputError(ValueError):
    """Feature input arrays have the wrong shape or values."""


def _clean(ts: object, v: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(ts, dtype=np.float64).ravel()
    x = np.asarray(v, dtype=np.float64).ravel()
    if t.shape != x.shape:
        raise FeatureInputError(
            f"{what}: timestamps and values must have the same length, found {t.shape[0]} and "
            f"{x.shape[0]}; pass one value per timestamp"
        )
    ok = np.isfinite(t) & np.isfinite(x)
    t, x = t[ok], x[ok]
    order = np.argsort(t, kind="stable")
    return np.ascontiguousarray(t[order]), np.ascontiguousarray(x[order])


def resting_hr(
    ts_hr: np.ndarray,
    hr: np.ndarray,
    ts_steps: np.ndarray,
    steps: np.ndarray,
    quiet_minutes: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute mean heart rate of quiet minutes: returns ``(minute_start_ts, rhr)``.

    ts_* are epoch seconds (any order; NaN rows dropped); steps are per-minute counts.
    """
    if int(quiet_minutes) < 1:
        raise FeatureInputError(f"quiet_minutes must be >= 1, found {quiet_minutes!r}")
    th, h = _clean(ts_hr, hr, "heart rate")
    tsn, sn = _clean(ts_steps, steps, "steps")
    return kernels().resting_hr(th, h, tsn, sn, int(quiet_minutes))
