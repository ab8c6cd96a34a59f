"""Payloads carried inside frames, one layout per sensor id (documented in docs/protocol.md)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class SensorId(IntEnum):
    ACCEL = 0x01  # u16 rate_hz, u16 n, n x (i16 x, i16 y, i16 z) in milli-g
    HEART_RATE = 0x02  # f32 beats per minute (NaN: no reading)
    STEPS = 0x03  # u16 steps, u16 interval seconds
    SKIN_TEMP = 0x04  # f32 degrees Celsius
    BATTERY = 0x05  # u8 percent, u16 millivolts
    DETECTIONS = 0x10  # perception unit: u8 k, k x (u8 class, u16 count), f32 conf, f32 latency_ms, f32 brightness
    DEVICE_INFO = 0x7F  # UTF-8 JSON object: device_id, kind, individual_id, firmware


# what a detections frame's class ids mean (the on-device detector's label map; COCO names)
DETECTION_LABELS = {0: "person", 1: "car", 2: "bicycle", 3: "dog", 4: "cat", 5: "bird", 6: "bear", 7: "deer"}


def detection_label(class_id: int) -> str:
    """The label of a detections frame's class id (``class-<id>`` when the map has none)."""
    return DETECTION_LABELS.get(class_id, f"class-{class_id}")


class PayloadError(ValueError):
    """A payload does not match the layout of its sensor id."""


@dataclass(frozen=True, slots=True)
class Accel:
    rate_hz: int
    samples: np.ndarray  # (n, 3) float32 in g

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Accel) and self.rate_hz == other.rate_hz
                and np.array_equal(self.samples, other.samples))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class HeartRate:
    bpm: float


@dataclass(frozen=True, slots=True)
class Steps:
    steps: int
    interval_s: int


@dataclass(frozen=True, slots=True)
class SkinTemp:
    celsius: float


@dataclass(frozen=True, slots=True)
class Battery:
    percent: int
    millivolts: int


@dataclass(frozen=True, slots=True)
class Detections:
    counts: tuple[tuple[int, int], ...]  # (class id, count)
    mean_confidence: float
    latency_ms: float
    brightness: float


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    info: dict[str, str]


Reading = Accel | HeartRate | Steps | SkinTemp | Battery | Detections | DeviceInfo

_U16U16 = struct.Struct("<HH")
_F32 = struct.Struct("<f")
_BATT = struct.Struct("<BH")
_DET_TAIL = struct.Struct("<fff")
_DET_ITEM = struct.Struct("<BH")
ACCEL_MAX_SAMPLES = (1024 - _U16U16.size) // 6


def encode_payload(reading: Reading) -> tuple[int, bytes]:
    """Return (sensor id, payload bytes) for a reading."""
    if isinstance(reading, Accel):
        mg = np.clip(np.rint(np.asarray(reading.samples, np.float64) * 1000.0), -32768, 32767)
        if mg.ndim != 2 or mg.shape[1] != 3 or len(mg) > ACCEL_MAX_SAMPLES:
            raise PayloadError(f"accel samples must be (n<= {ACCEL_MAX_SAMPLES}, 3), got {mg.shape}")
        return SensorId.ACCEL, _U16U16.pack(reading.rate_hz, len(mg)) + mg.astype("<i2").tobytes()
    if isinstance(reading, HeartRate):
        return SensorId.HEART_RATE, _F32.pack(reading.bpm)
    if isinstance(reading, Steps):
        return SensorId.STEPS, _U16U16.pack(min(reading.steps, 0xFFFF), reading.interval_s)
    if isinstance(reading, SkinTemp):
        return SensorId.SKIN_TEMP, _F32.pack(reading.celsius)
    if isinstance(reading, Battery):
        return SensorId.BATTERY, _BATT.pack(reading.percent, reading.millivolts)
    if isinstance(reading, Detections):
        body = bytes([len(reading.counts)]) + b"".join(_DET_ITEM.pack(c, n) for c, n in reading.counts)
        return SensorId.DETECTIONS, body + _DET_TAIL.pack(
            reading.mean_confidence, reading.latency_ms, reading.brightness)
    if isinstance(reading, DeviceInfo):
        return SensorId.DEVICE_INFO, json.dumps(reading.info, sort_keys=True).encode()
    raise PayloadError(f"unknown reading type {type(reading).__name__}")


_KINDS = {int(k): k for k in SensorId}


def decode_payload(sensor: int, payload: bytes) -> Reading:
    """Decode a payload; raises PayloadError naming the sensor and what was wrong."""
    kind = _KINDS.get(sensor)
    if kind is None:
        raise PayloadError(f"unknown sensor id 0x{sensor:02x}: update the agent or fix the firmware")
    try:
        if kind is SensorId.ACCEL:
            rate, n = _U16U16.unpack_from(payload)
            if len(payload) != _U16U16.size + 6 * n or rate == 0:
                raise PayloadError(f"accel payload: {len(payload)} bytes for n={n} rate={rate}")
            mg = np.frombuffer(payload, "<i2", offset=_U16U16.size).reshape(n, 3)
            return Accel(rate, (mg.astype(np.float32) / np.float32(1000.0)))
        if kind is SensorId.HEART_RATE:
            _exact(payload, _F32.size, kind)
            return HeartRate(_F32.unpack(payload)[0])
        if kind is SensorId.STEPS:
            _exact(payload, _U16U16.size, kind)
            steps, interval = _U16U16.unpack(payload)
            return Steps(steps, interval)
        if kind is SensorId.SKIN_TEMP:
            _exact(payload, _F32.size, kind)
            return SkinTemp(_F32.unpack(payload)[0])
        if kind is SensorId.BATTERY:
            _exact(payload, _BATT.size, kind)
            return Battery(*_BATT.unpack(payload))
        if kind is SensorId.DETECTIONS:
            k = payload[0]
            _exact(payload, 1 + k * _DET_ITEM.size + _DET_TAIL.size, kind)
            counts = tuple(_DET_ITEM.unpack_from(payload, 1 + i * _DET_ITEM.size) for i in range(k))
            conf, lat, bright = _DET_TAIL.unpack_from(payload, 1 + k * _DET_ITEM.size)
            return Detections(counts, conf, lat, bright)
        info = json.loads(payload.decode())
        if not isinstance(info, dict):
            raise PayloadError("device info must be a JSON object")
        return DeviceInfo({str(k): str(v) for k, v in info.items()})
    except (struct.error, IndexError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"{kind.name} payload of {len(payload)} bytes is malformed: {exc}") from None


def _exact(payload: bytes, size: int, kind: SensorId) -> None:
    if len(payload) != size:
        raise PayloadError(f"{kind.name} payload must be {size} bytes, got {len(payload)}")

