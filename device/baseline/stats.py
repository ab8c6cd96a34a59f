"""Mergeable, optionally forgetting, weighted Welford statistics.

>>> s = RunningStats()
>>> for x in (1.0, 2.0, 3.0):
...     _ = s.update(x)
...     print(s.n, s.mean, s.var)
1.0 1.0 0.0
2.0 1.5 0.25
3.0 2.0 0.6666666666666666
>>> other = RunningStats().update(10.0)
>>> s += other                       # merge: as if 1, 2, 3, 10 had been fed to one statistic
>>> s.n, s.mean, round(s.var, 4)
(4.0, 4.0, 12.5)
"""

from __future__ import annotations

import math

import numpy as np

from device.kernels.loader import kernels


class RunningStats:
    """Weighted count ``n``, ``mean`` and ``m2`` (population variance = m2 / n)."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self, n: float = 0.0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n, self.mean, self.m2 = float(n), float(mean), float(m2)

    def update(self, x: float, weight: float = 1.0) -> RunningStats:
        """Add ``x`` with ``weight`` (NaN is ignored); returns self for chaining."""
        if math.isfinite(x):
            n, mean, m2 = kernels().update(self.n, self.mean, self.m2, x, weight)
            self.n, self.mean, self.m2 = float(n), float(mean), float(m2)
        return self

    def decay(self, dt: float, memory: float) -> RunningStats:
        """Forget: weights and m2 shrink by ``exp(-dt / memory)``."""
        n, m2 = kernels().decay(self.n, self.m2, dt, memory)
        self.n, self.m2 = float(n), float(m2)
        return self

    @property
    def var(self) -> float:
        """Population variance (0 when empty)."""
        return float(self.m2 / self.n) if self.n > 0 else 0.0

    def get(self) -> float:
        """The mean (River's ``get``)."""
        return self.mean

    def __iadd__(self, other: RunningStats) -> RunningStats:
        n, mean, m2 = kernels().merge(self.n, self.mean, self.m2, other.n, other.mean, other.m2)
        self.n, self.mean, self.m2 = float(n), float(mean), float(m2)
        return self

    def __add__(self, other: RunningStats) -> RunningStats:
        out = RunningStats(self.n, self.mean, self.m2)
        out += other
        return out

    def to_array(self) -> np.ndarray:
        """``[n, mean, m2]`` as float64 (for storage next to other state)."""
        return np.array([self.n, self.mean, self.m2], dtype=np.float64)

    def __repr__(self) -> str:
        return f"RunningStats(n={self.n!r}, mean={self.mean!r}, m2={self.m2!r})"
