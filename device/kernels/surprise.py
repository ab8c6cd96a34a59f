"""The combined score: how surprising the short-term evidence is, then the refractory.

Per row the evidence (max over warm metrics) enters a short average (``surprise_short_s``; one
row weighs at most ``surprise_step_cap`` typical steps, :func:`_typical_step`), standardised
against its own long-run mean and spread (``surprise_long_s``) into ``1 - exp(-z / scale)``
(:func:`_surprise`); a score below the recent peak is damped (:func:`_refractory`). The long-run
statistic then learns the undiscounted evidence (in :mod:`device.kernels.deviation`).
"""

from __future__ import annotations

import math
from typing import Any

from numba import njit

from device.kernels import config
from device.kernels.layout import STEP_RATE

_JIT: dict[str, Any] = {"cache": True, "fastmath": config.EDGELOOP_FASTMATH, "inline": "always"}


@njit(**_JIT)
def _typical_step(step: float, dt: float) -> float:
    """The typical time step after a step ``dt``: a running median moving by ``STEP_RATE`` per
    row towards ``dt`` (the first step seen sets it)."""
    if step <= 0.0:
        return dt
    if dt > step:
        return min(step * STEP_RATE, dt)
    if dt < step:
        return max(step / STEP_RATE, dt)
    return step


@njit(**_JIT)
def _surprise(
    short: float, lmean: float, lw: float, lm2: float, raw: float, dts: float, any_warm: bool,
    short_s: float, floor: float, scale: float,
) -> tuple[float, float]:  # fmt: skip
    """``(combined before the refractory, short)``: ``raw`` enters the short average with the
    step ``dts``; its excess over the long-run mean ``lmean`` in long-run spreads (``lw``,
    ``lm2``; floored at ``floor``) gives ``1 - exp(-z / scale)`` (0 until a metric is warm)."""
    a = 1.0 - math.exp(-dts / short_s)
    short += a * (raw - short)
    comb = 0.0
    if any_warm and lw > 0.0:
        sdl = math.sqrt(lm2 / lw)
        if sdl < floor:
            sdl = floor
        zl = (short - lmean) / sdl
        if zl > 0.0:
            comb = 1.0 - math.exp(-zl / scale)
    return comb, short


@njit(**_JIT)
def _refractory(
    comb: float, peak: float, dt: float, refractory_s: float, level: float, margin: float,
    factor: float,
) -> tuple[float, float]:  # fmt: skip
    """``(score, peak)``: damp (x ``factor``) a score at or below the recent ``peak`` (decaying
    over ``refractory_s``), or, once the peak reached ``level``, one that does not beat it by
    ``margin``: one episode, one alert."""
    peak = peak * math.exp(-dt / refractory_s)
    damp = comb <= peak or (peak >= level and comb <= peak + margin)
    if comb > peak:
        peak = comb
    if damp:
        comb *= factor
    return comb, peak
