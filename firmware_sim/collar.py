"""A simulated pet-health collar: behaviour by time of day, physiology, injected conditions, frames.

Summary mode (default, what low-power collars do): each simulated minute sends one heart-rate
frame (the minute's mean of 1 Hz beats), one steps frame and one 4 s accelerometer burst at 25 Hz;
skin temperature every 5 minutes, battery every hour. Full-rate mode (``full_rate=True``) sends
heart rate at 1 Hz and the accelerometer continuously in 1 s frames. Everything is deterministic
from the individual's seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from firmware_sim.motion import accel_window
from firmware_sim.scenario import Condition, Individual
from shared.frames import Frame, encode_frame
from shared.payloads import (
    Accel,
    Battery,
    DeviceInfo,
    HeartRate,
    Reading,
    SkinTemp,
    Steps,
    encode_payload,
)

HR_OFFSET = {"sleep": -10.0, "rest": 0.0, "eat": 12.0, "walk": 30.0, "run": 65.0, "play": 45.0}
STEPS = {"sleep": (0, 0), "rest": (0, 0), "eat": (2, 10), "walk": (70, 110), "run": (150, 200),
         "play": (40, 120)}
POOL = 24  # pre-generated accelerometer windows per activity (sampled, so runs stay fast)


class CollarSim:
    """Generates the byte stream of one collar over ``days`` simulated days from ``start_ts``."""

    def __init__(self, ind: Individual, start_ts: float, days: float, *, accel_hz: int = 25,
                 burst_s: float = 4.0, full_rate: bool = False) -> None:
        self.ind = ind
        self.start_ts = start_ts
        self.minutes = int(days * 1440)
        self.accel_hz = accel_hz
        self.burst_n = int(burst_s * accel_hz)
        self.full_rate = full_rate
        self.rng = np.random.default_rng(ind.seed)
        n_pool = self.accel_hz if full_rate else self.burst_n
        self._pool = {a: [accel_window(a, n_pool, float(accel_hz), self.rng) for _ in range(POOL)]
                      for a in HR_OFFSET}
        self._seq = 0
        self._play_left = 0
        self._hr_noise = 0.0

    # ---- behaviour -------------------------------------------------------------------------
    def _cond(self, t: float, kind: str) -> Condition | None:
        for c in self.ind.conditions:
            if c.kind == kind and c.active(t):
                return c
        return None

    def activity_at(self, m: int) -> str:
        tr = self.ind.traits
        t = m * 60.0
        h = (t / 3600.0) % 24.0
        rng = self.rng
        ill, injured = self._cond(t, "illness"), self._cond(t, "injury")
        if self._cond(t, "excitement"):
            return "play"
        asleep = (h - tr.sleep_start_h) % 24.0 < tr.sleep_hours
        if asleep:
            return "rest" if ill and rng.random() < 0.3 else "sleep"
        act = "rest"
        for w in tr.walk_hours:
            if 0 <= h - w < 0.5 * tr.activity_level:
                act = "run" if rng.random() < 0.1 else "walk"
        if any(0 <= h - meal < 8 / 60 for meal in (8.0, 18.7)):
            act = "eat"
        if act == "rest":
            if self._play_left > 0:
                self._play_left -= 1
                act = "play"
            elif rng.random() < 0.012 * tr.activity_level:
                self._play_left = int(rng.integers(2, 8))
                act = "play"
        if (ill or injured) and act in ("walk", "run", "play"):
            cut = 0.6 if ill else (injured.magnitude if injured else 0.0)
            act = "rest" if rng.random() < cut else "walk"
        return act

    def heart_rate(self, t: float, act: str) -> float:
        tr = self.ind.traits
        rhr = tr.resting_hr
        ill = self._cond(t, "illness")
        if ill:
            rhr += ill.magnitude
        if self._cond(t, "injury"):
            rhr += 2.0
        heat = self._cond(t, "heat")
        h = (t / 3600.0) % 24.0
        circadian = 2.5 * math.sin(2 * math.pi * (h - 9.0) / 24.0)
        self._hr_noise = 0.7 * self._hr_noise + self.rng.normal(0.0, tr.hr_noise * 0.7)
        hr = rhr + HR_OFFSET[act] + circadian + self._hr_noise
        if heat:
            hr += heat.magnitude
        exc = self._cond(t, "excitement")
        if exc:
            hr += exc.magnitude - HR_OFFSET["play"] + 30.0
        return float(hr)

    # ---- frames ------------------------------------------------------------------------------
    def _frame(self, ts: float, reading: Reading) -> bytes:
        sensor, payload = encode_payload(reading)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return encode_frame(Frame(sensor=sensor, seq=self._seq, ts_ms=int(round(ts * 1000)), payload=payload))

    def frames(self) -> Iterator[bytes]:
        """Yield encoded frames (and injected garbage) in device order."""
        for _, chunk in self.chunks():
            yield chunk

    def chunks(self) -> Iterator[tuple[float, bytes]]:
        """Yield (simulated seconds since start, bytes of that minute) in device order."""
        ind, rng = self.ind, self.rng
        yield 0.0, self._frame(self.start_ts, DeviceInfo({"schema": "2", "device_id": ind.device_id, "kind": ind.kind,
                                                     "individual_id": ind.individual_id,
                                                     "firmware": "sim-1.0"}))
        stuck_value: float | None = None
        garbage = next((c for c in ind.conditions if c.kind == "garbage"), None)
        jumps = [c for c in ind.conditions if c.kind == "clock_jump"]
        battery = 100.0
        for m in range(self.minutes):
            t = m * 60.0
            act = self.activity_at(m)
            hr = self.heart_rate(t, act)
            stuck = self._cond(t, "stuck")
            if stuck:
                stuck_value = hr if stuck_value is None else stuck_value
                hr = stuck_value
            else:
                stuck_value = None
            saturated = self._cond(t, "saturation") is not None
            dropout = self._cond(t, "dropout") is not None
            ts = self.start_ts + t + sum(c.magnitude for c in jumps if t >= c.start)
            out: list[bytes] = []
            lo, hi = STEPS[act]
            steps = int(rng.integers(lo, hi + 1)) if hi else int(act == "rest" and rng.random() < 0.04)
            out.append(self._frame(ts + 59.0, Steps(steps, 60)))
            if not dropout:
                pool = self._pool[act]
                if self.full_rate:
                    for s in range(60):
                        beat = 250.0 if saturated else hr + float(rng.normal(0, 1.5))
                        out.append(self._frame(ts + s, HeartRate(beat)))
                        w = pool[int(rng.integers(POOL))]
                        out.append(self._frame(ts + s, Accel(self.accel_hz, np.clip(w, -8, 8))))
                else:
                    out.append(self._frame(ts + 30.0, HeartRate(250.0 if saturated else hr)))
                    w = pool[int(rng.integers(POOL))]
                    if saturated:
                        w = np.sign(w) * 8.0
                    out.append(self._frame(ts + 30.0, Accel(self.accel_hz, w)))
            if m % 5 == 0:
                temp = self.ind.traits.skin_temp + (0.7 if self._cond(t, "illness") else 0.0) + (
                    1.5 if self._cond(t, "heat") else 0.0) + float(rng.normal(0, 0.1))
                out.append(self._frame(ts, SkinTemp(temp)))
            if m % 60 == 0:
                battery = max(5.0, battery - 0.25)
                out.append(self._frame(ts, Battery(int(battery), int(3300 + 9 * battery))))
            if garbage and garbage.active(t):
                for i, fr in enumerate(out):
                    if rng.random() < garbage.magnitude * 10:
                        out[i] = bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8)) + fr
                    elif rng.random() < garbage.magnitude:
                        b = bytearray(fr)
                        b[int(rng.integers(2, len(b)))] ^= 1 << int(rng.integers(8))
                        out[i] = bytes(b)  # a flipped bit: the CRC must catch it
            yield t, b"".join(out)

    def end_frame(self) -> bytes:
        """A device-info frame marking the end of a simulated stream (simulators only)."""
        return self._frame(self.start_ts + self.minutes * 60.0, DeviceInfo({"event": "end_of_stream"}))

    def write_trace(self, path: str) -> int:
        """Write the whole stream to a trace file; returns bytes written."""
        n = 0
        with open(path, "wb") as f:
            for chunk in self.frames():
                n += f.write(chunk)
        return n

