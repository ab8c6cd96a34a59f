"""What one metric's deviation contributes to the combined score, and its spike score.

* :func:`_envelope_evidence`: ``|z|`` (direction aware) beyond ``envelope_factor`` x the envelope,
  the largest recent warm ``z`` of the same sign (clipped, decaying over ``envelope_s``,
  :func:`_envelope_record`): a spike of the size seen lately is little news, a larger one or one
  of the other sign is;
* :func:`_daily_envelope`: a big ``|z|`` recurring at this hour of day (seen at this hour or a
  neighbouring one on two different days within ``daily_env_s``) is discounted in full;
* :func:`_sustained_evidence`: plus the standardised smoothed deviation ``|zs|``;
* :func:`_spike_score`: ``1 - exp(-(|z| - spike_z0) / spike_scale)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from device.kernels import config
from device.kernels.circadian import _clip
from device.kernels.layout import (
    BIN_T,
    D_CONF,
    D_ENV,
    D_TIME,
    N_BINS,
)

_JIT: dict[str, Any] = {"cache": True, "fastmath": config.EDGELOOP_FASTMATH, "inline": "always"}
HALF_DAY_S = 43200.0  # two sightings of a daily deviation must be this far apart


@njit(**_JIT)
def _directed(v: float, d: float) -> float:
    """``v`` in the direction that counts: ``|v|`` when undirected (``d`` 0), else ``d`` x ``v``."""
    return abs(v) if d == 0.0 else (v if d > 0.0 else -v)


@njit(**_JIT)
def _envelope_evidence(
    z: float, zd: float, envp: float, envn: float, factor: float, clip: float
) -> tuple[float, float]:
    """``(evidence, envelope)``: the directed ``zd`` beyond ``factor`` x the envelope of ``z``'s
    sign, clipped at ``clip`` (subtract, then clip: a second, much larger shift keeps full
    evidence)."""
    env = envp if z >= 0.0 else envn
    ev = 0.0
    if zd > 0.0:
        ev = min(max(0.0, zd - factor * env), clip)
    return ev, env


@njit(**_JIT)
def _envelope_record(z: float, envp: float, envn: float, clip: float) -> tuple[float, float]:
    """``(envp, envn)``: the envelope of ``z``'s sign rises to ``|z|`` (clipped) if larger."""
    zcl = _clip(z, -clip, clip)
    if zcl > envp:
        envp = zcl
    if -zcl > envn:
        envn = -zcl
    return envp, envn


@njit(**_JIT)
def _daily_envelope(
    s: np.ndarray, hh: int, t: float, z: float, zd: float, env: float, ev: float, memory: float,
    big_z: float, factor: float, env_factor: float, clip: float,
) -> float:  # fmt: skip
    """The evidence ``ev`` after the daily discount at hour ``hh``; records a big ``|z|`` in the
    metric's state row ``s`` (its ``d_env``, ``d_time``, ``d_conf`` slots).

    Per hour of day: the largest recent ``|z| >= big_z`` and when it was seen; one seen on two
    different days (>= 12 h apart) at this hour or a neighbour becomes the hour's *daily level*,
    subtracted (x ``factor``) from a new deviation when larger than the envelope term
    (``env_factor`` x ``env``). All three decay over ``memory`` (0: off) with the hour bin's
    clock."""
    if memory <= 0.0:
        return ev
    ds = memory
    fh = math.exp(-(t - s[hh * 4 + BIN_T]) / ds)
    s[D_ENV + hh] *= fh
    s[D_CONF + hh] *= fh
    denv = 0.0
    near = 0.0
    for dh in range(-1, 2):
        k = (hh + dh) % N_BINS
        fk = 1.0 if dh == 0 else math.exp(-(t - s[k * 4 + BIN_T]) / ds)
        if s[D_CONF + k] * fk > denv:
            denv = s[D_CONF + k] * fk
        if t - s[D_TIME + k] >= HALF_DAY_S and s[D_ENV + k] * fk > near:
            near = s[D_ENV + k] * fk
    denv *= factor
    if zd > 0.0 and denv > env_factor * env:
        ev = min(max(0.0, zd - denv), clip)
    if abs(z) >= big_z:
        az = abs(_clip(z, -clip, clip))
        if near > 0.0:
            s[D_CONF + hh] = max(s[D_CONF + hh], min(az, near))
        if az > s[D_ENV + hh] or t - s[D_TIME + hh] >= HALF_DAY_S:
            s[D_ENV + hh] = max(s[D_ENV + hh], az)
            s[D_TIME + hh] = t
    return ev


@njit(**_JIT)
def _spike_score(zd: float, scale: float, z0: float, spike_scale: float) -> float:
    """Instantaneous score in [0, 1) of the directed ``zd`` (widened by ``scale``)."""
    zz = zd / scale - z0
    if zz > 0.0:
        return 1.0 - math.exp(-zz / spike_scale)
    return 0.0


@njit(**_JIT)
def _sustained_evidence(
    zs: float, d: float, scale: float, ev: float, ev_l: float, clip: float
) -> tuple[float, float]:
    """Add the directed ``|zs|`` (clipped; carried over missing samples) to both evidences and
    divide them by the metric's widen factor ``scale``."""
    zsd = _directed(zs, d)
    if zsd > 0.0:
        ev += min(zsd, clip)
        ev_l += min(zsd, clip)
    return ev / scale, ev_l / scale
