"""Individuals, injected conditions and ground truth for simulated devices."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DAY = 86400.0
#: simulated time starts at a midnight (2026-01-05 00:00 UTC) in the demo and the sims
DEMO_START = 1767571200.0
HOUR = 3600.0

# Conditions the detector SHOULD report, and those it must NOT (one-off spikes, sensor faults).
ALERT_CONDITIONS = ("illness", "injury", "heat")
NO_ALERT_CONDITIONS = ("excitement",)
FAULT_CONDITIONS = ("stuck", "dropout", "saturation", "clock_jump", "garbage")


@dataclass(frozen=True)
class Traits:
    """What makes one animal itself (all per individual, drawn from a seed)."""

    resting_hr: float = 80.0  # bpm at rest, awake
    hr_noise: float = 3.0  # bpm, minute-to-minute
    sleep_start_h: float = 22.0  # local hour the night's sleep starts
    sleep_hours: float = 10.0
    activity_level: float = 1.0  # scales walk length and play
    walk_hours: tuple[float, ...] = (7.5, 12.5, 18.0)
    skin_temp: float = 38.3


@dataclass(frozen=True)
class Condition:
    """An injected condition with its ground truth: [start, start + duration) in sim seconds."""

    kind: str
    start: float
    duration: float
    magnitude: float = 1.0

    @property
    def end(self) -> float:
        return self.start + self.duration

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class Individual:
    individual_id: str
    device_id: str
    seed: int
    traits: Traits
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    kind: str = "collar"


NAMES = ("bella", "max", "luna", "charlie", "daisy", "rocky", "molly", "buddy", "coco", "bailey")


def random_traits(rng: np.random.Generator) -> Traits:
    return Traits(
        resting_hr=float(rng.uniform(65, 100)),
        hr_noise=float(rng.uniform(2.0, 4.0)),
        sleep_start_h=float(rng.uniform(21.0, 23.5)),
        sleep_hours=float(rng.uniform(9.0, 11.5)),
        activity_level=float(rng.uniform(0.7, 1.3)),
        walk_hours=tuple(float(h + rng.uniform(-0.7, 0.7)) for h in (7.5, 12.5, 18.0)),
        skin_temp=float(rng.uniform(38.0, 38.8)),
    )


def default_fleet(n: int = 5, days: float = 14.0, seed: int = 7) -> list[Individual]:
    """The demo fleet: the first five show one story each, the rest repeat them with new traits.

    0 illness (resting HR up, activity down, restless nights for 3 days), 1 injury (activity down),
    2 heat stress afternoon + one-off excitement, 3 sensor faults + excitement, 4 healthy control
    with excitement. Conditions are placed relative to ``days`` so shorter runs still show them.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        story = i % 5
        name = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else f"-{i // len(NAMES)}")
        c: list[Condition] = []
        onset_day = float(np.floor(days * 0.55)) + float(rng.uniform(0.2, 0.6))
        if story == 0:
            c.append(Condition("illness", onset_day * DAY, 3.0 * DAY, magnitude=float(rng.uniform(11, 15))))
        elif story == 1:
            c.append(Condition("injury", onset_day * DAY, 3.0 * DAY, magnitude=0.75))
        elif story == 2:
            c.append(Condition("heat", (np.floor(days * 0.7) + 13 / 24) * DAY, 5 * HOUR, magnitude=18))
        elif story == 3:
            c += [Condition("stuck", np.floor(days * 0.35) * DAY + 10 * HOUR, 2 * HOUR),
                  Condition("dropout", np.floor(days * 0.45) * DAY + 2 * HOUR, 6 * HOUR),
                  Condition("saturation", np.floor(days * 0.5) * DAY + 15 * HOUR, 10 * 60),
                  Condition("garbage", 0.0, days * DAY, magnitude=0.002),
                  Condition("clock_jump", np.floor(days * 0.8) * DAY + 3 * HOUR, 0.0, magnitude=HOUR)]
        if story in (2, 3, 4):
            for d in (0.45, 0.65, 0.85):
                start = (np.floor(days * d) + float(rng.uniform(9, 19)) / 24) * DAY
                c.append(Condition("excitement", start, 15 * 60, magnitude=40))
        out.append(Individual(name, f"collar-{i:03d}", seed * 1000 + i, random_traits(rng), tuple(c)))
    return out


def write_ground_truth(individuals: list[Individual], start_ts: float, path: Path) -> None:
    """Ground truth as JSON: per individual, its conditions in absolute epoch seconds."""
    doc = {
        ind.individual_id: {
            "device_id": ind.device_id,
            "traits": asdict(ind.traits),
            "conditions": [dict(asdict(c), start_ts=start_ts + c.start, end_ts=start_ts + c.end)
                           for c in ind.conditions],
        }
        for ind in individuals
    }
    path.write_text(json.dumps(doc, indent=1))
