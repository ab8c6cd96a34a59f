"""Synthetic 3-axis collar accelerometer signals, one window per call.

``accel_window(activity, n, rate_hz, rng)`` returns ``(n, 3)`` float32 samples in g: a gravity
vector under a random per-window collar orientation plus the activity's dynamic acceleration
and sensor noise. Everything is drawn from ``rng`` so a seeded generator gives identical output.

Activity models (body frame: x forward, y lateral, z up before rotation):

- ``sleep``: near still, slow breathing (0.2-0.4 Hz, ~2-5 mg), rare tiny twitches.
- ``rest``: still, breathing (0.3-0.6 Hz), small posture shifts and slow head drift.
- ``walk``: gait at 1.5-2.0 Hz with harmonics, lateral sway at half the step rate.
- ``run``: gait at 2.5-3.5 Hz, larger amplitude, strong harmonics and impact peaks.
- ``eat``: head lowered (pitched gravity), head bobbing 0.4-0.9 Hz, chewing/lapping 2-4 Hz in bouts.
- ``play``: irregular bursts (random directions, durations, pauses), pounces and head shakes.
"""

from __future__ import annotations

import numpy as np

ACTIVITIES: tuple[str, ...] = ("sleep", "rest", "walk", "run", "eat", "play")

SENSOR_NOISE_G = 0.006
SENSOR_RANGE_G = 8.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation matrix (from a random unit quaternion)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _pitch(angle: np.ndarray) -> np.ndarray:
    """Gravity direction (n, 3) for a head pitched down by ``angle`` radians (per sample)."""
    return np.stack([-np.sin(angle), np.zeros_like(angle), np.cos(angle)], axis=1)


def _phase(t: np.ndarray, f0: float, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """Phase of a quasi-periodic oscillation: frequency f0 with a slow random wander."""
    if t.size == 0:
        return t.copy()
    dt = float(t[1] - t[0]) if t.size > 1 else 1.0
    wander = np.cumsum(rng.normal(0.0, jitter * np.sqrt(dt), size=t.size))
    wander -= wander.mean()
    freq = f0 * (1.0 + np.clip(wander, -0.25, 0.25))
    return 2 * np.pi * np.cumsum(freq) * dt + rng.uniform(0, 2 * np.pi)


def _smooth_noise(n: int, rate_hz: float, cutoff_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance low-pass noise (n,), via a moving average of white noise."""
    width = max(1, int(round(rate_hz / max(cutoff_hz, 1e-3))))
    x = rng.normal(size=n + width)
    y = np.convolve(x, np.ones(width) / width, mode="valid")[:n]
    std = y.std()
    return y / std if std > 0 else y


def _still(t: np.ndarray, rate_hz: float, rng: np.random.Generator, sleep: bool) -> np.ndarray:
    n = t.size
    dyn = np.zeros((n, 3))
    f_breath = rng.uniform(0.2, 0.4) if sleep else rng.uniform(0.3, 0.6)
    amp = rng.uniform(0.002, 0.005) if sleep else rng.uniform(0.003, 0.008)
    breath = amp * np.sin(_phase(t, f_breath, rng, 0.05))
    dyn[:, 2] += breath
    dyn[:, 0] += 0.4 * breath
    if not sleep:
        # slow head drift and occasional small posture shifts
        dyn += 0.01 * np.stack([_smooth_noise(n, rate_hz, 0.3, rng) for _ in range(3)], axis=1)
        n_shift = rng.poisson(0.08 * t[-1]) if n > 1 else 0
        for _ in range(n_shift):
            i0 = rng.integers(0, n)
            length = int(rng.uniform(0.3, 1.0) * rate_hz)
            i1 = min(n, i0 + max(length, 1))
            dyn[i0:i1] += rng.normal(0, 0.04, size=3)
    else:
        n_twitch = rng.poisson(0.01 * t[-1]) if n > 1 else 0
        for _ in range(n_twitch):
            i0 = rng.integers(0, n)
            i1 = min(n, i0 + max(1, int(0.2 * rate_hz)))
            dyn[i0:i1] += rng.normal(0, 0.03, size=3)
    return dyn


def _gait(t: np.ndarray, rng: np.random.Generator, running: bool) -> np.ndarray:
    if running:
        f0 = rng.uniform(2.5, 3.5)
        a_v, a_f, a_l = rng.uniform(0.5, 0.9), rng.uniform(0.25, 0.5), rng.uniform(0.15, 0.3)
        h2, h3 = rng.uniform(0.4, 0.7), rng.uniform(0.2, 0.4)
    else:
        f0 = rng.uniform(1.5, 2.0)
        a_v, a_f, a_l = rng.uniform(0.12, 0.3), rng.uniform(0.06, 0.15), rng.uniform(0.04, 0.1)
        h2, h3 = rng.uniform(0.3, 0.6), rng.uniform(0.05, 0.2)
    ph = _phase(t, f0, rng, 0.02)
    vert = a_v * (np.sin(ph) + h2 * np.sin(2 * ph + rng.uniform(0, 2 * np.pi))
                  + h3 * np.sin(3 * ph + rng.uniform(0, 2 * np.pi)))
    if running:
        # impact peaks at foot strike: one-sided sharp pulses
        vert += rng.uniform(0.3, 0.8) * np.maximum(np.sin(ph), 0) ** 6
    fwd = a_f * np.sin(ph + rng.uniform(0, np.pi)) + 0.3 * a_f * np.sin(2 * ph)
    lat = a_l * np.sin(0.5 * ph + rng.uniform(0, 2 * np.pi))
    return np.stack([fwd, lat, vert], axis=1)


def _eat(t: np.ndarray, rate_hz: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic part and per-sample head pitch for eating/drinking."""
    n = t.size
    f_bob = rng.uniform(0.4, 0.9)
    bob = np.sin(_phase(t, f_bob, rng, 0.1))
    pitch = rng.uniform(0.5, 1.1) + rng.uniform(0.1, 0.3) * bob
    f_chew = rng.uniform(2.0, 4.0)
    chew = rng.uniform(0.04, 0.12) * np.sin(_phase(t, f_chew, rng, 0.1))
    # chewing/lapping in bouts: a smooth on/off envelope
    env = (_smooth_noise(n, rate_hz, 0.4, rng) > rng.uniform(-1.0, 0.0)).astype(float)
    k = max(1, int(0.3 * rate_hz))
    env = np.convolve(env, np.ones(k) / k, mode="full")[k // 2 : k // 2 + n]
    dyn = np.zeros((n, 3))
    dyn[:, 2] += chew * env
    dyn[:, 0] += 0.6 * chew * env + rng.uniform(0.03, 0.08) * bob
    dyn[:, 1] += 0.02 * _smooth_noise(n, rate_hz, 1.0, rng)
    return dyn, pitch


def _play(t: np.ndarray, rate_hz: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic part and per-sample pitch for irregular vigorous play."""
    n = t.size
    dyn = 0.08 * np.stack([_smooth_noise(n, rate_hz, 2.0, rng) for _ in range(3)], axis=1)
    pitch = 0.3 * _smooth_noise(n, rate_hz, 0.5, rng)
    i = 0
    while i < n:
        i += int(rng.exponential(0.5) * rate_hz)  # pause between bursts
        length = max(2, int(rng.uniform(0.2, 1.2) * rate_hz))
        if i >= n:
            break
        seg = slice(i, min(n, i + length))
        m = seg.stop - seg.start
        kind = rng.integers(0, 3)
        tt = np.arange(m) / rate_hz
        if kind == 0:  # pounce / jump: one big pulse in a random direction
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            dyn[seg] += rng.uniform(0.8, 2.5) * np.sin(np.pi * tt / max(tt[-1], 1e-6))[:, None] * d
        elif kind == 1:  # head shake: fast lateral oscillation
            f = rng.uniform(4.0, 7.0)
            dyn[seg, 1] += rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * f * tt)
        else:  # sprint fragment: a short burst of fast strides
            f = rng.uniform(2.8, 4.0)
            dyn[seg, 2] += rng.uniform(0.5, 1.2) * np.sin(2 * np.pi * f * tt)
            dyn[seg, 0] += rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * f * tt + 1.0)
        i += length
    return dyn, pitch


def accel_window(
    activity: str,
    n: int,
    rate_hz: float,
    rng: np.random.Generator,
    intensity: float = 1.0,
) -> np.ndarray:
    """A plausible collar accelerometer window: ``(n, 3)`` float32 in g.

    ``intensity`` scales the dynamic (non-gravity) part: 0.5 is a sluggish animal, 1.5 a lively one.
    Raises ``ValueError`` for an unknown activity, ``n < 0`` or ``rate_hz <= 0``.
    """
    if activity not in ACTIVITIES:
        raise ValueError(f"unknown activity {activity!r}; expected one of {ACTIVITIES}")
    if n < 0 or rate_hz <= 0:
        raise ValueError(f"need n >= 0 and rate_hz > 0, got n={n}, rate_hz={rate_hz}")
    if n == 0:
        return np.zeros((0, 3), dtype=np.float32)
    t = np.arange(n) / float(rate_hz)
    pitch = np.full(n, rng.uniform(-0.2, 0.3))
    if activity in ("sleep", "rest"):
        dyn = _still(t, rate_hz, rng, sleep=activity == "sleep")
        if activity == "sleep":
            pitch = np.full(n, rng.uniform(0.0, 1.4))  # lying: head on the floor at any angle
    elif activity in ("walk", "run"):
        dyn = _gait(t, rng, running=activity == "run")
    elif activity == "eat":
        dyn, pitch = _eat(t, rate_hz, rng)
    else:
        dyn, pitch = _play(t, rate_hz, rng)
    body = _pitch(pitch) + intensity * dyn
    rot = _random_rotation(rng)
    out = body @ rot.T + rng.normal(0.0, SENSOR_NOISE_G, size=(n, 3))
    return np.clip(out, -SENSOR_RANGE_G, SENSOR_RANGE_G).astype(np.float32)
