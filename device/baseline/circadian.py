"""Hour-of-day baseline for one metric: ``learn_one`` / ``score_one`` like River's detectors.

It is the baseline part of :class:`device.detect.engine.Engine` (same kernels, same config):
24 hour-of-day bins blended with a global statistic while bins are young, winsorised learning,
exponential forgetting. Deciding what is an alert is not its job (see :mod:`device.detect`).

>>> import numpy as np
>>> b = CircadianBaseline()
>>> for k in range(3 * 24 * 60):                 # three days of minute data, 60 +- 1
...     b.learn_one(60.0 * k, 60.0 + (k % 3 - 1))
>>> round(b.predict(3600.0 * 5)[0], 2), round(b.score_one(3 * 86400.0, 64.0), 1)
(60.0, 4.9)
"""

from __future__ import annotations

import math

import numpy as np

from device.baseline.stats import RunningStats
from device.detect.engine import Engine, EngineConfig
from device.kernels import layout as L
from device.kernels.loader import kernels


class CircadianBaseline:
    """Per-individual, per-metric baseline; state is one float64 row (mergeable statistics)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config if config is not None else EngineConfig()
        self._cfg = self.config.vector()
        st, _ = L.new_state(1)
        self._s = st[0]
        self._tprev = math.nan

    @classmethod
    def from_engine(cls, engine: Engine, metric: str) -> CircadianBaseline:
        """A copy of the baseline ``engine`` keeps for ``metric``."""
        b = cls(engine.config)
        b._s[:] = engine._st[engine.metrics.index(metric)]
        b._tprev = float(b._s[L.M_TLAST]) if b._s[L.M_NVALID] > 0 else math.nan
        return b

    @staticmethod
    def _hour(ts: float) -> int:
        return int((ts % 86400.0) // 3600.0)

    def predict(self, ts: float) -> tuple[float, float]:
        """Baseline ``(mean, spread)`` at epoch seconds ``ts`` (NaN mean before any data)."""
        base, sd = kernels().baseline(self._cfg, self._s, self._hour(ts), float(ts))
        return float(base), float(sd)

    def learn_one(self, ts: float, x: float) -> None:
        """Learn one sample; its weight is the time since the previous one (capped)."""
        if not (math.isfinite(ts) and math.isfinite(x)):
            return
        cfg = self.config
        dt = cfg.weight_unit_s if math.isnan(self._tprev) else ts - self._tprev
        if dt <= 0:
            return
        u = min(dt, cfg.weight_cap_s) / cfg.weight_unit_s
        base, sd = self.predict(ts)
        kernels().learn(self._cfg, self._s, self._hour(ts), float(ts), float(x), base, sd, u)
        self._tprev = ts

    def score_one(self, ts: float, x: float) -> float:
        """Standardised deviation ``(x - baseline) / spread`` (0 when unknown)."""
        base, sd = self.predict(ts)
        if not (math.isfinite(base) and math.isfinite(x)):
            return 0.0
        return float((x - base) / sd)

    def bin(self, hour: int) -> RunningStats:
        """The statistic of one hour-of-day bin (as stored, before forgetting to now)."""
        b = hour * 4
        return RunningStats(self._s[b + L.BIN_W], self._s[b + L.BIN_MEAN], self._s[b + L.BIN_M2])

    def overall(self) -> RunningStats:
        """The global statistic (as stored)."""
        return RunningStats(self._s[L.G_W], self._s[L.G_MEAN], self._s[L.G_M2])

    def __iadd__(self, other: CircadianBaseline) -> CircadianBaseline:
        """Merge another baseline of the same metric (e.g. from another device or time range)."""
        t = max(self._s[L.G_T], other._s[L.G_T])
        mem = self.config.memory_s
        for off in [h * 4 for h in range(L.N_BINS)] + [L.G_W]:
            a = RunningStats(self._s[off], self._s[off + 1], self._s[off + 2])
            a.decay(t - self._s[off + 3], mem)
            o = RunningStats(other._s[off], other._s[off + 1], other._s[off + 2])
            o.decay(t - other._s[off + 3], mem)
            a += o
            self._s[off : off + 4] = (a.n, a.mean, a.m2, t)
        return self

    def to_array(self) -> np.ndarray:
        """The state row (float64, ``N_STATE`` values)."""
        return self._s.copy()
