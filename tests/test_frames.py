"""Frame codec: round trip, rejection and resync, byte accounting; payload layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.frames import MAX_PAYLOAD, Frame, FrameDecoder, FrameError, encode_frame
from shared.payloads import (
    Accel,
    Battery,
    Detections,
    DeviceInfo,
    HeartRate,
    PayloadError,
    SensorId,
    SkinTemp,
    Steps,
    decode_payload,
    encode_payload,
)

frames = st.builds(
    Frame,
    sensor=st.integers(0, 255),
    seq=st.integers(0, 2**32 - 1),
    ts_ms=st.integers(-(2**63), 2**63 - 1),
    payload=st.binary(max_size=300),
)


@given(st.lists(frames, max_size=8), st.integers(1, 64))
def test_round_trip_any_chunking(fs: list[Frame], chunk: int) -> None:
    data = b"".join(encode_frame(f) for f in fs)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(data), chunk):
        got += dec.feed(data[i : i + chunk])
    assert got == fs
    assert dec.stats.bytes_rejected == 0 and dec.stats.frames_ok == len(fs)
    assert dec.pending == 0


@given(frames, frames, st.binary(min_size=1, max_size=64))
def test_garbage_between_frames_is_counted_and_resynced(a: Frame, b: Frame, junk: bytes) -> None:
    data = encode_frame(a) + junk + encode_frame(b)
    dec = FrameDecoder()
    got = dec.feed(data)
    dec.flush()
    # the first frame always survives; the second survives unless the junk forged a longer frame
    assert got[0] == a
    assert b in got or dec.stats.bytes_rejected > 0
    s = dec.stats
    assert s.bytes_ok + s.bytes_rejected == len(data)


@settings(max_examples=200)
@given(frames, st.data())
def test_bit_flip_is_rejected_and_next_frame_recovered(f: Frame, data: st.DataObject) -> None:
    raw = bytearray(encode_frame(f))
    pos = data.draw(st.integers(2, len(raw) - 1))  # any bit after the sync word
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    good = Frame(sensor=2, seq=7, ts_ms=1, payload=b"ok")
    dec = FrameDecoder()
    got = dec.feed(bytes(raw) + encode_frame(good))
    dec.flush()
    assert f not in got, "a corrupted frame must never be accepted"
    s = dec.stats
    assert s.crc_errors + s.bad_length + s.bad_version >= 1 or s.bytes_rejected > 0


@settings(max_examples=100)
@given(frames, st.data())
def test_corrupted_frame_in_a_continuing_stream_loses_only_itself(f: Frame, data: st.DataObject) -> None:
    """Even a flipped length bit (which makes the decoder wait for more bytes) is resolved once the
    stream goes on: every following good frame is recovered."""
    raw = bytearray(encode_frame(f))
    raw[data.draw(st.integers(2, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    good = [Frame(sensor=2, seq=i, ts_ms=i, payload=bytes(100)) for i in range(12)]
    dec = FrameDecoder()
    got = dec.feed(bytes(raw) + b"".join(encode_frame(g) for g in good))
    assert f not in got
    assert got[-len(good):] == good


def test_truncated_frame_waits_then_counts_on_flush() -> None:
    raw = encode_frame(Frame(1, 1, 1, b"x" * 50))
    dec = FrameDecoder()
    assert dec.feed(raw[:-5]) == []
    assert dec.pending == len(raw) - 5
    dec.flush()
    assert dec.stats.bytes_rejected == len(raw) - 5 and dec.pending == 0


def test_encode_rejects_bad_fields_with_clear_message() -> None:
    with pytest.raises(FrameError, match="split it"):
        encode_frame(Frame(1, 1, 1, b"x" * (MAX_PAYLOAD + 1)))
    with pytest.raises(FrameError, match="sensor id"):
        encode_frame(Frame(300, 1, 1, b""))


readings = st.one_of(
    st.builds(HeartRate, st.floats(width=32, allow_nan=False)),
    st.builds(Steps, st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(SkinTemp, st.floats(width=32, allow_nan=False)),
    st.builds(Battery, st.integers(0, 255), st.integers(0, 65535)),
    st.builds(Detections, st.lists(st.tuples(st.integers(0, 255), st.integers(0, 65535)), max_size=10).map(tuple),
              st.floats(width=32, allow_nan=False), st.floats(width=32, allow_nan=False),
              st.floats(width=32, allow_nan=False)),
    st.builds(DeviceInfo, st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)),
)


@given(readings)
def test_payload_round_trip(r: object) -> None:
    sensor, payload = encode_payload(r)  # type: ignore[arg-type]
    assert decode_payload(sensor, payload) == r


@given(st.integers(1, 150), st.integers(1, 100))
def test_accel_round_trip_in_milli_g(n: int, rate: int) -> None:
    rng = np.random.default_rng(n)
    x = np.round(rng.uniform(-8, 8, (n, 3)), 3).astype(np.float32)
    sensor, payload = encode_payload(Accel(rate, x))
    back = decode_payload(sensor, payload)
    assert isinstance(back, Accel) and back.rate_hz == rate
    np.testing.assert_allclose(back.samples, x, atol=6e-4)


def test_nan_heart_rate_survives_transport() -> None:
    s, p = encode_payload(HeartRate(math.nan))
    back = decode_payload(s, p)
    assert isinstance(back, HeartRate) and math.isnan(back.bpm)


@pytest.mark.parametrize("sensor,payload,match", [
    (0x42, b"", "unknown sensor id 0x42"),
    (SensorId.HEART_RATE, b"\x00\x01", "HEART_RATE payload must be 4 bytes"),
    (SensorId.ACCEL, b"\x19\x00\x05\x00" + b"\x00" * 6, "accel payload"),
    (SensorId.DEVICE_INFO, b"[1, 2]", "JSON object"),
    (SensorId.DEVICE_INFO, b"\xff\xfe", "malformed"),
])
def test_bad_payloads_name_the_problem(sensor: int, payload: bytes, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        decode_payload(sensor, payload)
