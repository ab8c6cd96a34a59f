"""Deciding, apart from scoring (as river's ``ThresholdFilter`` sits apart from a scorer).

The scorer (:mod:`device.kernels.deviation`) writes each metric's persistence; :func:`_decide`
reads them and fires a *sustained* event when the persistence of warm metrics at ``contrib_p`` or
more sums to ``event_sum``: edge-triggered (re-armed once the sum falls below), at most one per
``cooldown_s``. It marks the contributing metrics and scores the event (:func:`_event_score`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from device.kernels import config
from device.kernels.layout import (
    E_ARMED,
    E_LASTEV,
    FLAG_ORDER,
    O_CONTRIB,
    O_PERS,
    O_WARM,
    O_ZS,
    R_ESCORE,
    R_EVENT,
)

_JIT: dict[str, Any] = {"cache": True, "fastmath": config.EDGELOOP_FASTMATH, "inline": "always"}


@njit(**_JIT)
def _event_score(out: np.ndarray, i: int, contrib_p: float, zs_clip: float) -> float:
    """Mark row ``i``'s contributing metrics (``O_CONTRIB``); the event's score is
    1 - prod(1 - 0.6 x persistence x min(1, 2 |zs| / zs_clip)) over them."""
    keep = 1.0
    for j in range(out.shape[2]):
        if out[O_WARM, i, j] != 0.0 and out[O_PERS, i, j] >= contrib_p:
            out[O_CONTRIB, i, j] = 1.0
            zz = min(1.0, 2.0 * abs(out[O_ZS, i, j]) / zs_clip)
            keep *= 1.0 - 0.6 * out[O_PERS, i, j] * zz
    return 1.0 - keep


@njit(**_JIT)
def _decide(
    eng: np.ndarray, t: float, flags: int, out: np.ndarray, rows: np.ndarray, i: int,
    contrib_p: float, event_sum: float, cooldown_s: float, zs_clip: float,
) -> None:  # fmt: skip
    """Decide scored row ``i`` at ``t``: fire (``rows[R_EVENT, i] = 1``, the event's score in
    ``R_ESCORE``) or re-arm (``eng``'s ``armed``, ``lastev``); a rejected row (flag 2) neither
    fires nor re-arms."""
    rows[R_EVENT, i] = 0.0
    rows[R_ESCORE, i] = 0.0
    if flags & FLAG_ORDER != 0:
        return
    total = 0.0
    for j in range(out.shape[2]):
        if out[O_WARM, i, j] != 0.0 and out[O_PERS, i, j] >= contrib_p:
            total += out[O_PERS, i, j]
    if total >= event_sum:
        if eng[E_ARMED] != 0.0 and t - eng[E_LASTEV] >= cooldown_s:
            eng[E_ARMED] = 0.0
            eng[E_LASTEV] = t
            rows[R_EVENT, i] = 1.0
            rows[R_ESCORE, i] = _event_score(out, i, contrib_p, zs_clip)
    else:
        eng[E_ARMED] = 1.0
