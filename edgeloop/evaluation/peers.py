"""Peer detectors measured in the same run as edgeloop's engine.

* ``river_hst_scores``: River HalfSpaceTrees on min-max scaled input (the README's peer row).
* ``windowed_gaussian_scores``: NAB's "windowedGaussian" detector, re-implemented from its
  published description, used to validate our NAB scorer against its published scores.
* ``nightsignal``: NightSignal (Alavi et al., Nature Medicine 2022), the published online
  wearable alerting algorithm, restated from its description and public code (Fitbit path).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

__all__ = ["NightSignalResult", "nightsignal", "river_hst_scores", "windowed_gaussian_scores"]


def river_hst_scores(
    values: np.ndarray,
    *,
    n_trees: int = 25,
    height: int = 15,
    window_size: int = 250,
    seed: int = 42,
) -> np.ndarray:
    """Score a 1-D stream with ``MinMaxScaler() | HalfSpaceTrees``: score_one, then learn_one.

    Returns float64 scores in [0, 1], one per row, each computed before that row is learnt.
    Requires the ``river`` package (a dev dependency).
    """
    try:
        from river import anomaly, preprocessing
    except ImportError as exc:  # pragma: no cover - river is in the dev extras
        raise ImportError(
            "river is needed for the HalfSpaceTrees peer; install the dev extras "
            "(pip install -e '.[dev]')"
        ) from exc
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"river_hst_scores expects a 1-D array, found shape {x.shape}")
    model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
        n_trees=n_trees, height=height, window_size=window_size, seed=seed
    )
    out = np.empty(len(x), dtype=np.float64)
    for i, v in enumerate(x.tolist()):
        row = {"value": v}
        out[i] = model.score_one(row)
        model.learn_one(row)
    return np.clip(out, 0.0, 1.0)


def windowed_gaussian_scores(
    values: np.ndarray, window_size: int = 6400, step_size: int = 100
) -> np.ndarray:
    """NAB's windowed Gaussian: ``1 - Q(|x - mean| / std)`` over a sliding window of past rows.

    The window grows to ``window_size`` rows (stats refreshed after every row), then slides
    forward by ``step_size`` rows at a time (stats refreshed after each step). The first row
    scores 0; a zero standard deviation is replaced by 1e-6. Scores lie in [0, 1).
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    out = np.zeros(n, dtype=np.float64)
    if n < 2:
        return out
    d = x - x[0]  # shift to limit cancellation in the sums of squares
    c1 = np.concatenate([[0.0], np.cumsum(d)])
    c2 = np.concatenate([[0.0], np.cumsum(d * d)])
    i = np.arange(1, n)
    # the stats in force at row i were computed over rows [lo, hi) before row i was seen
    full = i > window_size
    hi = i.copy()
    last_full = window_size - 1  # row index after which the window first became full
    # after filling, stats refresh after rows last_full + k * step_size
    k = (i - 1 - last_full) // step_size
    hi[full] = (last_full + k[full] * step_size) + 1
    lo = np.where(full, hi - window_size, 0)
    cnt = (hi - lo).astype(np.float64)
    mean_d = (c1[hi] - c1[lo]) / cnt
    var = np.maximum((c2[hi] - c2[lo]) / cnt - mean_d * mean_d, 0.0)
    std = np.sqrt(var)
    # population std of an all-equal window is exactly 0 in NAB: snap numerical noise to 0
    std = np.where(std <= 1e-12 * np.maximum(1.0, np.abs(mean_d + x[0])), 0.0, std)
    std = np.where(std == 0.0, 1e-6, std)
    z = np.abs(d[1:] - mean_d) / std
    erfc = np.frompyfunc(math.erfc, 1, 1)
    out[1:] = 1.0 - 0.5 * erfc(z / math.sqrt(2.0)).astype(np.float64)
    return out


@dataclass(frozen=True)
class NightSignalResult:
    """NightSignal's nightly values and alerts (dates are the mornings, alerts at 07:00)."""

    dates: np.ndarray  # datetime64[D], every night with a value (measured or imputed)
    avg: np.ndarray  # average overnight resting heart rate (whole bpm)
    baseline: np.ndarray  # running median of the averages up to and including that night
    level: np.ndarray  # 0 green, 1 yellow, 2 red

    def alert_times(self, min_level: int = 1) -> np.ndarray:
        """Alert times (datetime64[s], 07:00 of the date) at ``min_level`` (1 yellow, 2 red) or above."""
        d = self.dates[self.level >= min_level]
        return d.astype("datetime64[s]") + np.timedelta64(7 * 3600, "s")


def nightsignal(
    ts_hr: np.ndarray, hr: np.ndarray, ts_steps: np.ndarray, steps: np.ndarray,
    yellow: float = 3.0, red: float = 4.0,
) -> NightSignalResult:  # fmt: skip
    """NightSignal on Fitbit heart rate and minute steps (epoch seconds of the files' clock).

    As published: every heart-rate sample between 00:00 and 06:59 whose minute has a step
    count of zero counts (as a whole number) towards that date's average overnight resting heart
    rate (the mean, truncated); a single missing night between two measured ones is imputed from
    its neighbours; the baseline of a night is the median of all averages up to and including it
    (truncated); a night is a potential red (yellow) when its average is at least ``red``
    (``yellow``) bpm above its baseline, and the second of two consecutive potential nights is
    red (yellow when not red). All the arithmetic follows the public code's Fitbit path.
    """
    t_s = np.asarray(ts_steps, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)
    ok = np.isfinite(t_s) & np.isfinite(s)
    zero_minutes = set(np.floor(t_s[ok & (s == 0.0)] / 60.0).astype(np.int64).tolist())
    t_h = np.asarray(ts_hr, dtype=np.float64)
    h = np.asarray(hr, dtype=np.float64)
    okh = np.isfinite(t_h) & np.isfinite(h)
    t_h, h = t_h[okh], h[okh]
    minute = np.floor(t_h / 60.0).astype(np.int64)
    night = (minute % 1440) < 7 * 60
    keep = night & np.fromiter((m in zero_minutes for m in minute.tolist()), bool, len(minute))
    day = (minute[keep] // 1440).tolist()
    vals = np.trunc(h[keep]).astype(np.int64).tolist()
    sums: dict[int, list[int]] = {}
    for d, v in zip(day, vals, strict=True):
        sums.setdefault(d, []).append(v)
    avgs = {d: int(sum(v) / len(v)) for d, v in sums.items()}
    keys = sorted(avgs)
    imputed: dict[int, int] = {}
    for i in range(1, len(keys) - 1):
        prev, today, nxt = keys[i - 1], keys[i], keys[i + 1]
        if nxt - today == 1 and today - prev == 2:
            miss, other = today - 1, prev
        elif nxt - today == 2 and today - prev == 1:
            miss, other = today + 1, nxt
        else:
            continue
        if miss not in avgs and miss not in imputed:
            imputed[miss] = int(round((avgs[today] + avgs[other]) / 2, 1))
    avgs.update(imputed)
    keys = sorted(avgs)
    series = [avgs[k] for k in keys]
    base = [int(statistics.median(series[: i + 1])) for i in range(len(series))]
    level = [0] * len(keys)
    for thr, lv in ((red, 2), (yellow, 1)):
        pot = [k for k, a, b in zip(keys, series, base, strict=True) if a >= b + thr]
        for a, b in zip(pot, pot[1:], strict=False):
            if b - a == 1 and level[keys.index(b)] == 0:
                level[keys.index(b)] = lv
    return NightSignalResult(
        dates=np.array(keys, dtype="datetime64[D]"),
        avg=np.array(series, dtype=np.float64),
        baseline=np.array(base, dtype=np.float64),
        level=np.array(level, dtype=np.int64),
    )
