"""Illness watch on a wearable's nights: evidence that accumulates, and alert levels that mean something.

Each morning a :class:`~device.features.nightly.NightRecord` (overnight resting heart rate, the
restlessness of the night, the steps of the day before) is compared with this individual's own
robust baseline: per feature the median and MAD of the last ``window`` *clean* nights (not while
red, nor a night whose resting heart rate is ``exclude_z`` spreads up: a fever must not become
the baseline; after ``max_excluded`` nights in a row kept out the baseline accepts the new
normal); the spread is shrunk towards a prior (``rhr_prior`` ...) as if it were ``min_nights``
nights. A night's evidence is the robust
z of its resting heart rate (up counts), combined, on a night whose resting heart rate is up,
with the drop in steps and the rise in restlessness (``use_steps``, ``use_restless``; Stouffer: their z's summed over the square root of how
many there are, each clipped to ``[-z_clip, z_clip]``: one wild night is bounded, no weights).
A one-sided CUSUM adds the nights' evidence less an allowance ``k``, one night carrying at most
half the way to red: one elevated night is never an alert, several in a row are.

Levels: ``green`` (nothing), ``yellow`` (watch: the sum at half the threshold, or a single
night at ``z_clip``; shown, not notified), ``red`` (act: the sum reached ``threshold``: several
nights well above this individual's normal; the owner is notified once per episode, which ends
when the level is back to green).

>>> w = NightWatch()
>>> from device.features.nightly import NightRecord
>>> rec = lambda d, rhr: NightRecord(d, d * 86400.0 + 25200.0, rhr, 300, 5.0, 8000.0)
>>> levels = [w.update(rec(d, 60.0 + (d % 3) * 0.5)).level for d in range(20)]
>>> levels[-1], [w.update(rec(20 + d, 68.0)).level for d in range(3)]
('green', ['yellow', 'red', 'red'])
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, fields

import numpy as np

from device.features.nightly import NightRecord

logger = logging.getLogger(__name__)

__all__ = ["LEVELS", "NightAssessment", "NightWatch", "NightWatchConfig", "NightWatchStateError"]

LEVELS = ("green", "yellow", "red")
FEATURES = ("rhr", "steps", "restless")
_SIGN = {"rhr": 1.0, "steps": -1.0, "restless": 1.0}  # the direction illness moves each


class NightWatchStateError(ValueError):
    """A saved NightWatch state cannot be restored."""


@dataclass(frozen=True)
class NightWatchConfig:
    """One set of defaults for every wearer (people's watches, the collar's nights)."""

    window: int = 28  # clean nights in each baseline (median and MAD)
    min_nights: int = 14  # a feature scores once its baseline holds this many nights
    k: float = 0.5  # CUSUM allowance (z per night): a 1-spread shift adds 0.5 a night
    threshold: float = 3.0  # red at this sum (z-nights)
    cap: float = 1.5  # the sum is capped at cap x threshold (a long illness ends in bounded time)
    z_clip: float = 3.0  # a night's z per feature is clipped to +-this
    rhr_prior: float = 3.0  # bpm: prior spread of the overnight resting HR ...
    steps_prior: float = 0.4  # ... of log steps (a 40 % change) ...
    restless_prior: float = 15.0  # ... of restless minutes; each weighs like min_nights nights
    exclude_z: float = 2.0  # a night this far above (resting HR) is kept out of the baseline
    steps_offset: float = 500.0  # steps are compared as log(steps + offset)
    use_steps: bool = True  # the drop in steps corroborates resting HR ...
    use_restless: bool = False  # ... a restless night could (measured: it does not help)
    max_excluded: int = 14  # nights in a row kept out of the baseline before it gives in

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool):
                continue
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"NightWatchConfig.{f.name} must be a finite number > 0, "
                                 f"found {v!r}")  # fmt: skip
        if self.min_nights > self.window:
            raise ValueError(f"NightWatchConfig.min_nights ({self.min_nights}) must not exceed "
                             f"window ({self.window})")  # fmt: skip


@dataclass(frozen=True)
class NightAssessment:
    """The morning's verdict on one night."""

    day: int
    ts: float
    level: str  # "green" | "yellow" | "red"
    notify: bool  # True on the morning an episode turns red (one notification per episode)
    evidence: float  # the CUSUM sum in z-nights (red at threshold)
    night: float  # this night's combined z (0 when nothing could be scored)
    z: dict[str, float]  # per feature robust z (NaN: missing or baseline too young)
    baseline: dict[str, float]  # per feature baseline median (NaN: none yet)


def _robust(values: deque[float], prior: float, prior_n: int) -> tuple[float, float]:
    """Median and spread: 1.4826 x MAD, shrunk towards ``prior`` as if it were ``prior_n``
    nights (a week of nights says little about the spread)."""
    a = np.asarray(values, dtype=np.float64)
    med = float(np.median(a))
    sd = 1.4826 * float(np.median(np.abs(a - med)))
    n = len(a)
    return med, math.sqrt((n * sd * sd + prior_n * prior * prior) / (n + prior_n))


class NightWatch:
    """Streaming: one :meth:`update` per night, in order. State is a few hundred floats."""

    def __init__(self, config: NightWatchConfig | None = None) -> None:
        self.config = config if config is not None else NightWatchConfig()
        n = self.config.window
        self._base: dict[str, deque[float]] = {f: deque(maxlen=n) for f in FEATURES}
        self.evidence = 0.0
        self.level = "green"
        self._excluded = 0  # nights in a row kept out of the baseline
        self._last_day: int | None = None

    def _value(self, rec: NightRecord, f: str) -> float:
        if f == "steps":
            return math.log(rec.steps + self.config.steps_offset) if rec.steps >= 0 else math.nan
        return float(getattr(rec, f))

    def _prior(self, f: str) -> float:
        c = self.config
        return {"rhr": c.rhr_prior, "steps": c.steps_prior, "restless": c.restless_prior}[f]

    def update(self, rec: NightRecord) -> NightAssessment:
        """Score one night against the baseline, accumulate, set the level, learn if clean."""
        c = self.config
        if self._last_day is not None and rec.day <= self._last_day:
            logger.warning("nightwatch.night_out_of_order", extra={"day": rec.day})
            return NightAssessment(rec.day, rec.ts, self.level, False, self.evidence, 0.0,
                                   {f: math.nan for f in FEATURES},
                                   {f: math.nan for f in FEATURES})  # fmt: skip
        self._last_day = rec.day
        vals = {f: self._value(rec, f) for f in FEATURES}
        z: dict[str, float] = {}
        base: dict[str, float] = {}
        for f in FEATURES:
            z[f] = base[f] = math.nan
            if len(self._base[f]) >= c.min_nights:
                med, sd = _robust(self._base[f], self._prior(f), c.min_nights)
                base[f] = med
                if math.isfinite(vals[f]):
                    zz = _SIGN[f] * (vals[f] - med) / sd
                    z[f] = min(max(zz, -c.z_clip), c.z_clip)
        used = [z["rhr"]] if math.isfinite(z["rhr"]) else []
        for f, on in (("steps", c.use_steps), ("restless", c.use_restless)):
            # corroboration adds to a resting-HR rise, it never makes one: fewer steps alone (a
            # lazy week, the weeks after an illness) is not evidence of an illness
            if on and used and z["rhr"] > 0.0 and math.isfinite(z[f]):
                used.append(z[f])
        night = sum(used) / math.sqrt(len(used)) if used else 0.0
        if used:  # a night without resting HR neither adds nor takes away; one night carries
            # at most half the way to red: red always takes two nights or more
            step = min(night - c.k, 0.5 * c.threshold)
            self.evidence = min(max(0.0, self.evidence + step), c.cap * c.threshold)
        was = self.level
        if self.evidence >= c.threshold:
            level = "red"
        elif self.evidence >= 0.5 * c.threshold or (used and z["rhr"] >= c.z_clip):
            level = "yellow"
        else:
            level = "green"
        if was == "red" and level == "yellow":
            level = "red"  # an episode ends when the evidence is back to green
        notify = level == "red" and was != "red"
        self.level = level
        sick = level == "red" or (math.isfinite(z["rhr"]) and z["rhr"] >= c.exclude_z)
        clean = not sick or self._excluded >= c.max_excluded
        for f in FEATURES:
            if clean and math.isfinite(vals[f]):
                self._base[f].append(vals[f])
        self._excluded = self._excluded + 1 if sick else 0  # gave in: learn until a normal night
        if notify:
            logger.info("nightwatch.red", extra={"day": rec.day, "evidence": self.evidence})
        return NightAssessment(rec.day, rec.ts, level, notify, self.evidence, night, z, base)

    # ------------------------------------------------------------------ state
    def state(self) -> bytes:
        """JSON bytes: config, baselines, evidence, level (a few KB at most)."""
        return json.dumps({
            "v": 1, "config": asdict(self.config), "base": {f: list(self._base[f]) for f in FEATURES},
            "evidence": self.evidence, "level": self.level, "excluded": self._excluded,
            "last_day": self._last_day,
        }).encode()  # fmt: skip

    @classmethod
    def from_state(cls, data: bytes, config: NightWatchConfig | None = None) -> NightWatch:
        """Rebuild from :meth:`state`; ``config`` (when given) replaces the saved one."""
        try:
            d = json.loads(bytes(data).decode())
            if d.get("v") != 1:
                raise ValueError(f"version {d.get('v')!r}")
            w = cls(config if config is not None else NightWatchConfig(**d["config"]))
            for f in FEATURES:
                w._base[f].extend(float(x) for x in d["base"][f])
            w.evidence = float(d["evidence"])
            w.level = str(d["level"]) if d["level"] in LEVELS else "green"
            w._excluded = int(d["excluded"])
            w._last_day = None if d["last_day"] is None else int(d["last_day"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise NightWatchStateError(
                f"cannot restore NightWatch state ({exc}); pass bytes from NightWatch.state()"
            ) from exc
        return w
