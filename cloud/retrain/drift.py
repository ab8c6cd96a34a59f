"""Drift of daily summary metrics: population stability index and two-sample KS test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

PSI_EPS = 1e-4


def psi(reference: Sequence[float], recent: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``recent`` against ``reference``.

    Bins are ``(-inf, q1], (q1, q2], ..., (qk, inf)`` with ``q`` the reference's distinct inner
    quantiles (so a constant reference still separates a shifted sample); empty bins count as
    ``PSI_EPS`` so the index stays finite. 0 = same distribution; >= 0.25 is the usual "drifted".
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(recent, dtype=np.float64)
    if ref.size == 0 or cur.size == 0:
        raise ValueError(f"psi needs two non-empty samples, found sizes {ref.size} and {cur.size}")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    n = inner.size + 1
    r = np.bincount(np.searchsorted(inner, ref, side="left"), minlength=n) / ref.size
    c = np.bincount(np.searchsorted(inner, cur, side="left"), minlength=n) / cur.size
    r = np.maximum(r, PSI_EPS)
    c = np.maximum(c, PSI_EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_pvalue(reference: Sequence[float], recent: Sequence[float]) -> tuple[float, float]:
    """(KS statistic, p-value) of the two-sample Kolmogorov-Smirnov test."""
    res = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(recent, dtype=np.float64),
                         method="asymp")
    return float(res.statistic), float(res.pvalue)


def summary_values(body: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metrics of a daily summary body: its numeric top-level fields (``steps``,
    ``minutes``, ...) overlaid with the per-metric means in ``metrics_mean`` (the device agent's
    layout) or ``metrics``."""
    out: dict[str, float] = {}
    nested: list[Mapping[str, Any]] = [v for k in ("metrics", "metrics_mean")
                                       if isinstance(v := body.get(k), Mapping)]
    for src in (body, *nested):
        for k, v in src.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if math.isfinite(float(v)):
                out[str(k)] = float(v)
    return out
