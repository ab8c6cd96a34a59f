"""A simulated Raspberry Pi perception unit: one detection summary per minute.

Each minute: object counts per class, mean detection confidence, inference latency and scene
brightness, following daylight. Conditions: ``conf_drift`` (confidence sinking, e.g. a dirty
lens or dusk the model never learned), ``novel_class`` (a class never seen at this site),
``frozen`` (the camera repeats one frame: brightness and counts constant), ``moved`` (the camera
was turned: from then on a darker view of the garden, no cars, more animals).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from firmware_sim.scenario import DAY, HOUR, Condition, Individual, Traits
from shared.frames import Frame, encode_frame
from shared.payloads import Detections, DeviceInfo, Reading, encode_payload

CLASSES = ("person", "car", "bicycle", "dog", "cat")  # ids 0..4; 7 = novel ("deer", shared.payloads)
WEIGHTS = (1.0, 1.5, 0.3, 0.2, 0.1)  # objects per frame per class, times the scene's busyness
MOVED_WEIGHTS = (0.6, 0.0, 0.05, 0.6, 0.4)  # turned to the garden: no cars


def default_unit(days: float = 14.0, seed: int = 11) -> Individual:
    moved = np.floor(days * 0.92) * DAY + 6 * HOUR
    c = (Condition("conf_drift", np.floor(days * 0.6) * DAY, 2 * DAY, magnitude=0.25),
         Condition("novel_class", np.floor(days * 0.75) * DAY + 20 * HOUR, 3 * HOUR),
         Condition("frozen", np.floor(days * 0.85) * DAY + 9 * HOUR, 4 * HOUR),
         Condition("moved", moved, max(days * DAY - moved, 0.0)))
    return Individual("gate-cam", "pi-000", seed, Traits(), c, kind="perception")


class PerceptionSim:
    def __init__(self, unit: Individual, start_ts: float, days: float) -> None:
        self.unit, self.start_ts, self.minutes = unit, start_ts, int(days * 1440)
        self.rng = np.random.default_rng(unit.seed)
        self._seq = 0

    def _frame(self, ts: float, reading: Reading) -> bytes:
        sensor, payload = encode_payload(reading)
        self._seq += 1
        return encode_frame(Frame(sensor, self._seq, int(ts * 1000), payload))

    def _active(self, kind: str, t: float) -> Condition | None:
        return next((c for c in self.unit.conditions if c.kind == kind and c.active(t)), None)

    def chunks(self) -> Iterator[tuple[float, bytes]]:
        yield 0.0, self._frame(self.start_ts, DeviceInfo({"schema": "2", "device_id": self.unit.device_id, "kind": "perception",
                                                          "individual_id": self.unit.individual_id}))
        rng = self.rng
        frozen_reading: Detections | None = None
        for m in range(self.minutes):
            t = m * 60.0
            h = (t / 3600.0) % 24
            daylight = max(0.0, math.sin(math.pi * (h - 6.0) / 13.0))
            brightness = 20.0 + 200.0 * daylight + float(rng.normal(0, 5))
            busy = 0.3 + 2.5 * daylight
            moved = self._active("moved", t)
            weights = MOVED_WEIGHTS if moved else WEIGHTS
            if moved:
                brightness = 0.55 * brightness + 8.0
            counts = [(i, int(rng.poisson(busy * w))) for i, w in enumerate(weights)]
            if self._active("novel_class", t):
                counts.append((7, int(rng.integers(1, 3))))
            conf = 0.82 - 0.12 * (1 - daylight) + float(rng.normal(0, 0.02))
            drift = self._active("conf_drift", t)
            if drift:
                conf -= drift.magnitude
            reading = Detections(tuple(counts), conf, float(rng.normal(45, 4)), brightness)
            if self._active("frozen", t):
                frozen_reading = frozen_reading or reading
                reading = frozen_reading
            else:
                frozen_reading = None
            yield t, self._frame(self.start_ts + t + 30.0, reading)

    def end_frame(self) -> bytes:
        return self._frame(self.start_ts + self.minutes * 60.0, DeviceInfo({"event": "end_of_stream"}))
