"""A varied simulated fleet for the feedback-loop simulation, with ground truth.

Each individual gets random traits (``firmware_sim.scenario.random_traits``), conditions that
must alert (illness, injury, heat) placed evenly over the two phases, conditions that must not
(one-off excitement, sensor faults), and a *quirk* that is normal for this animal but looks like
a deviation to a detector that does not know it yet:

- ``anxious``: episodes of raised heart rate (+20..30 bpm for 5..10 h, every 2..4 days),
  e.g. a dog that frets when left alone; owners answer "dismiss" or "normal for her";
- ``drift``: the resting heart rate steps up by 10..15 bpm over two days and stays there
  (a new home, a season); owners answer "normal for her";
- none (the rest).

Quirk episodes never overlap a condition (+- 1 day), so the ground truth stays unambiguous.
``QuirkCollarSim`` is ``firmware_sim.collar.CollarSim`` with the quirk added to the heart rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from firmware_sim.collar import CollarSim
from firmware_sim.scenario import DAY, HOUR, Condition, Individual, random_traits
from shared.payloads import Accel, Reading

ALERT_KINDS = ("illness", "injury", "heat")
GRACE_S = 12 * HOUR  # an alert this long after a condition ended still belongs to it


@dataclass(frozen=True)
class Episode:
    """A quirk episode in sim seconds since the start: [start, start + duration)."""

    start: float
    duration: float
    magnitude: float

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class SimIndividual:
    """An individual plus its quirk (what is normal for it) and the phase boundary."""

    ind: Individual
    quirk: str = ""  # "" | "anxious" | "drift"
    episodes: tuple[Episode, ...] = field(default_factory=tuple)

    @property
    def individual_id(self) -> str:
        return self.ind.individual_id

    @property
    def device_id(self) -> str:
        return self.ind.device_id

    def alert_conditions(self) -> list[Condition]:
        return [c for c in self.ind.conditions if c.kind in ALERT_KINDS]

    def condition_at(self, t: float) -> Condition | None:
        """The alert condition an alert at sim time ``t`` belongs to (with GRACE_S), if any."""
        for c in self.alert_conditions():
            if c.start <= t <= c.end + GRACE_S:
                return c
        return None

    def quirk_at(self, t: float) -> bool:
        """Is a quirk episode active (or just over) at sim time ``t``?"""
        return any(e.start <= t <= e.end + GRACE_S for e in self.episodes)


def _free(t0: float, t1: float, busy: list[tuple[float, float]], pad: float) -> bool:
    return all(t1 + pad <= a or t0 - pad >= b for a, b in busy)


def build_fleet(n: int, days: float, seed: int = 7, *, anxious_share: float = 0.35,
                drift_share: float = 0.2) -> list[SimIndividual]:
    """``n`` individuals over ``days`` days; conditions are spread evenly over both halves."""
    rng = np.random.default_rng(seed)
    half = days / 2.0
    out: list[SimIndividual] = []
    for i in range(n):
        conds: list[Condition] = []
        busy: list[tuple[float, float]] = []
        # one alert condition per phase for most animals (illness most often), none for some
        for p in range(2):
            r = rng.random()
            lo, hi = p * half + min(2.5, half * 0.2), (p + 1) * half - min(4.0, half * 0.25)
            if hi <= lo:
                continue
            start = float(rng.uniform(lo, hi)) * DAY
            if r < 0.40:
                c = Condition("illness", start, 3.0 * DAY, magnitude=float(rng.uniform(11, 15)))
            elif r < 0.55:
                c = Condition("injury", start, 3.0 * DAY, magnitude=0.75)
            elif r < 0.75:
                start = (math.floor(start / DAY) + 13 / 24) * DAY
                c = Condition("heat", start, 5 * HOUR, magnitude=18.0)
            else:
                continue
            conds.append(c)
            busy.append((c.start, c.end))
        # harmless one-off excitement and, for some, sensor faults
        for _ in range(int(rng.integers(1, 4))):
            s = float(rng.uniform(1.5, days - 0.5)) * DAY
            if _free(s, s + 900, busy, DAY):
                conds.append(Condition("excitement", s, 15 * 60, magnitude=40))
        if rng.random() < 0.1:
            s = float(rng.uniform(2, days - 1)) * DAY
            if _free(s, s + 6 * HOUR, busy, DAY):
                conds.append(Condition("dropout", s, 6 * HOUR))
                busy.append((s, s + 6 * HOUR))
        quirk, episodes = "", []
        q = rng.random()
        if q < anxious_share:
            quirk = "anxious"
            t = float(rng.uniform(1.5, 4.0)) * DAY
            while t < days * DAY - DAY:
                start = (math.floor(t / DAY) + float(rng.uniform(8, 14)) / 24) * DAY
                dur = float(rng.uniform(5, 10)) * HOUR
                if _free(start, start + dur, busy, DAY):
                    episodes.append(Episode(start, dur, float(rng.uniform(20, 30))))
                t += float(rng.uniform(2, 4)) * DAY
        elif q < anxious_share + drift_share:
            quirk = "drift"
            for _ in range(8):
                start = float(rng.uniform(3, max(3.5, days - 6))) * DAY
                if _free(start, start + 4 * DAY, busy, DAY):
                    episodes.append(Episode(start, days * DAY - start, float(rng.uniform(10, 15))))
                    break
        ind = Individual(f"pet-{i:03d}", f"collar-{i:03d}", seed * 1000 + i, random_traits(rng),
                         tuple(sorted(conds, key=lambda c: c.start)))
        out.append(SimIndividual(ind, quirk if episodes else "", tuple(episodes)))
    return out


class QuirkCollarSim(CollarSim):
    """The firmware simulator with the individual's quirk added to its heart rate.

    ``accel=False`` leaves out the 4 s accelerometer bursts: the simulation runs agents without
    the activity classifier (the only consumer of the bursts besides raw uploads), and decoding
    them is half of the per-minute cost.
    """

    def __init__(self, sind: SimIndividual, start_ts: float, days: float, accel: bool = True) -> None:
        super().__init__(sind.ind, start_ts, days)
        self.sind = sind
        self.accel = accel

    def _frame(self, ts: float, reading: Reading) -> bytes:
        if not self.accel and isinstance(reading, Accel):
            return b""
        return super()._frame(ts, reading)

    def heart_rate(self, t: float, act: str) -> float:
        hr = super().heart_rate(t, act)
        for e in self.sind.episodes:
            if self.sind.quirk == "anxious" and e.start <= t < e.end:
                hr += e.magnitude
            elif self.sind.quirk == "drift" and t >= e.start:
                hr += e.magnitude * min(1.0, (t - e.start) / (2 * DAY))
        return hr
