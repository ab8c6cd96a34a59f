"""Property tests for the streaming FrameDecoder: garbage interleaved with valid frames, any chunking.

Invariants (hypothesis):
- every intact valid frame is recovered, in order, and nothing else is;
- byte accounting: bytes_ok + bytes_rejected + pending == bytes fed, with bytes_ok equal to the
  valid frames' bytes and bytes_rejected equal to the garbage bytes;
- resync: a frame is returned at the latest once MAX_FRAME further bytes have arrived after it
  (a false header can make the decoder wait for at most one maximum-size frame);
- no exception, no hang (pytest-timeout and hypothesis deadlines).
"""

from __future__ import annotations

import random
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.frames import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_PAYLOAD,
    SYNC,
    Frame,
    FrameDecoder,
    encode_frame,
)

MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE

frames_st = st.builds(
    Frame,
    sensor=st.integers(0, 255),
    seq=st.integers(0, 2**32 - 1),
    ts_ms=st.integers(-(2**63), 2**63 - 1),
    payload=st.one_of(st.binary(max_size=48), st.binary(min_size=MAX_PAYLOAD - 4,
                                                        max_size=MAX_PAYLOAD)),
)


valid_frames = frames_st


@st.composite
def garbage_st(draw: st.DrawFn) -> bytes:
    """Bytes that must not decode: noise, sync words, truncated / corrupted / false frames."""
    kind = draw(st.sampled_from(["noise", "sync", "truncated", "bitflip", "false_header",
                                 "bad_version", "too_long"]))
    if kind == "noise":
        return draw(st.binary(min_size=1, max_size=80))
    if kind == "sync":
        return SYNC + draw(st.binary(max_size=20))
    frame = encode_frame(draw(frames_st))
    if kind == "truncated":
        return frame[: draw(st.integers(1, len(frame) - 1))]
    if kind == "bitflip":
        i = draw(st.integers(0, len(frame) - 1))
        return frame[:i] + bytes([frame[i] ^ (1 << draw(st.integers(0, 7)))]) + frame[i + 1:]
    if kind == "false_header":  # claims a long payload; the decoder must wait, then give up
        return SYNC + bytes([1, draw(st.integers(0, 255))]) + draw(
            st.integers(0, MAX_PAYLOAD)).to_bytes(2, "little") + draw(st.binary(min_size=12,
                                                                                max_size=12))
    if kind == "bad_version":
        return frame[:2] + bytes([draw(st.integers(2, 255))]) + frame[3:]
    return SYNC + bytes([1, 1]) + (MAX_PAYLOAD + 1 + draw(st.integers(0, 60000))).to_bytes(
        2, "little") + bytes(12)


segments_st = st.lists(
    st.one_of(st.tuples(st.just("frame"), valid_frames, st.booleans()),
              st.tuples(st.just("junk"), garbage_st(), st.booleans())),
    max_size=25,
)


def _tail() -> list[Frame]:
    """Valid frames worth more than MAX_FRAME bytes: they flush any false header out."""
    tail = []
    seq = 0
    while sum(len(encode_frame(f)) for f in tail) <= MAX_FRAME:
        tail.append(Frame(sensor=7, seq=seq, ts_ms=seq, payload=bytes([seq % 251]) * 300))
        seq += 1
    return tail


TAIL = _tail()


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(segments=segments_st, cuts=st.lists(st.integers(0, 10**6), max_size=30))
def test_garbage_interleaved_any_chunking(segments: list[tuple[str, object, bool]],
                                          cuts: list[int]) -> None:
    stream = bytearray()
    expected: list[Frame] = []
    ends: list[int] = []
    boundaries: set[int] = set()  # chunk cuts at segment ends, where decoder edge cases live
    garbage_bytes = 0
    for kind, item, cut_after in [*segments, *(("frame", f, False) for f in TAIL)]:
        if kind == "frame":
            assert isinstance(item, Frame)
            stream += encode_frame(item)
            expected.append(item)
            ends.append(len(stream))
        else:
            assert isinstance(item, bytes)
            stream += item
            garbage_bytes += len(item)
        if cut_after:
            boundaries.add(len(stream))
    n = len(stream)
    points = sorted({c % (n + 1) for c in cuts} | boundaries | {0, n})
    dec = FrameDecoder()
    got: list[Frame] = []
    for a, b in zip(points, points[1:], strict=False):
        got += dec.feed(bytes(stream[a:b]))
        s = dec.stats
        assert s.bytes_ok + s.bytes_rejected + dec.pending == b, (s, dec.pending, b)
        # resync bound: every frame that ended at least MAX_FRAME bytes ago is out
        due = sum(1 for e in ends if e + MAX_FRAME <= b)
        assert len(got) >= due, f"frame {len(got)} not returned {b - ends[len(got)]} bytes later"
    assert got == expected
    s = dec.stats
    assert dec.pending == 0
    assert s.frames_ok == len(expected)
    assert s.bytes_ok == n - garbage_bytes
    assert s.bytes_rejected == garbage_bytes


@settings(max_examples=200, deadline=1000)
@given(frames=st.lists(valid_frames, min_size=1, max_size=10),
       noise=st.binary(min_size=1, max_size=200).filter(lambda b: SYNC[0] not in b))
def test_resync_is_immediate_after_noise_without_sync_bytes(frames: list[Frame],
                                                            noise: bytes) -> None:
    """Noise that holds no 0xA5 cannot hide a frame: the next frame comes out with its last byte."""
    dec = FrameDecoder()
    assert dec.feed(noise) == []
    for f in frames:
        assert dec.feed(encode_frame(f)) == [f]
    assert dec.stats.bytes_rejected == len(noise)


def test_seeded_random_mutation_volume() -> None:
    """200k random byte mutations of valid streams: never an exception, accounting always adds up."""
    rng = random.Random(7)
    base = b"".join(encode_frame(Frame(sensor=i % 8, seq=i, ts_ms=i, payload=bytes(i % 40)))
                    for i in range(50))
    dec = FrameDecoder()
    fed = 0
    for _ in range(2000):
        buf = bytearray(base)
        for _ in range(100):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        pos = 0
        while pos < len(buf):
            step = rng.randint(1, 300)
            dec.feed(bytes(buf[pos:pos + step]))
            pos += step
        fed += len(buf)
    s = dec.stats
    assert s.bytes_ok + s.bytes_rejected + dec.pending == fed
    assert s.frames_ok > 0 and s.bytes_rejected > 0 and s.crc_errors > 0


def test_zero_length_and_max_length_payloads() -> None:
    frames = [Frame(sensor=1, seq=1, ts_ms=0, payload=b""),
              Frame(sensor=1, seq=2, ts_ms=0, payload=b"\xa5\x5a" * (MAX_PAYLOAD // 2))]
    dec = FrameDecoder()
    out = []
    for byte in b"".join(encode_frame(f) for f in frames):
        out += dec.feed(bytes([byte]))
    assert out == frames


def _frame_ending_in(byte: int) -> Frame:
    for seq in range(1_000_000):
        f = Frame(sensor=2, seq=seq, ts_ms=0, payload=b"x")
        if encode_frame(f)[-1] == byte:
            return f
    raise AssertionError("unreachable")


def test_frame_ending_in_0xA5_at_chunk_end_is_not_double_counted() -> None:
    f = _frame_ending_in(0xA5)
    dec = FrameDecoder()
    assert dec.feed(encode_frame(f)) == [f]
    assert dec.pending == 0
    assert dec.feed(encode_frame(f)) == [f]
    assert dec.stats.bytes_rejected == 0 and dec.stats.resyncs == 0


def test_flush_recovers_frames_behind_a_false_header() -> None:
    good = Frame(sensor=3, seq=9, ts_ms=1, payload=b"tail")
    false_header = SYNC + bytes([1, 2]) + (900).to_bytes(2, "little") + bytes(12)
    dec = FrameDecoder()
    got = dec.feed(false_header + encode_frame(good))
    got += dec.flush()  # end of stream: rescans past the false header
    assert got == [good]
    assert dec.stats.bytes_ok + dec.stats.bytes_rejected == len(false_header) + len(
        encode_frame(good)) and dec.pending == 0


def test_crc_is_zlib_crc32_over_header_and_payload() -> None:
    """Guard for the generators above: an encoded frame's CRC covers bytes 2..-4."""
    raw = encode_frame(Frame(sensor=1, seq=1, ts_ms=1, payload=b"abc"))
    assert zlib.crc32(raw[2:-4]).to_bytes(4, "little") == raw[-4:]
