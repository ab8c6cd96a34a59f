"""Per-individual baselines: mergeable weighted Welford statistics and an hour-of-day baseline
with River's ``learn_one`` / ``score_one`` interface (the same kernels the Engine runs)."""

from device.baseline.circadian import CircadianBaseline
from device.baseline.stats import RunningStats

__all__ = ["CircadianBaseline", "RunningStats"]
