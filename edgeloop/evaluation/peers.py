"""Peer detectors measured in the same run as edgeloop's engine.

* ``river_hst_scores``: River HalfSpaceTrees on min-max scaled input (the README's peer row).
* ``windowed_gaussian_scores``: NAB's "windowedGaussian" detector, re-implemented from its
  published description, used to validate our NAB scorer against its published scores.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["river_hst_scores", "windowed_gaussian_scores"]


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
