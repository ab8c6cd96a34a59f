"""Binary frame protocol between a sensor (collar, perception unit) and the device agent.

Layout (little-endian), documented in docs/protocol.md::

    offset size field
    0      2    sync bytes 0xA5 0x5A
    2      1    protocol version (1)
    3      1    sensor id (see shared.payloads.SensorId)
    4      2    payload length n (0..MAX_PAYLOAD)
    6      4    sequence number (u32, wraps)
    10     8    timestamp, ms since the Unix epoch on the device clock (i64)
    18     n    payload
    18+n   4    CRC-32 (zlib) over bytes 2 .. 18+n (header after sync, and payload)

`FrameDecoder` is a streaming decoder: feed it any chunking of bytes and it returns whole
frames, resyncing on the next sync word after garbage and counting every rejected byte.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

SYNC = b"\xa5\x5a"
VERSION = 1
MAX_PAYLOAD = 1024
_HEADER = struct.Struct("<BBHIq")  # version, sensor, length, seq, ts_ms
HEADER_SIZE = len(SYNC) + _HEADER.size  # 18
CRC_SIZE = 4
MIN_FRAME = HEADER_SIZE + CRC_SIZE


class FrameError(ValueError):
    """A frame could not be built (bad field values)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    sensor: int
    seq: int
    ts_ms: int
    payload: bytes
    version: int = VERSION
    offset: int = field(default=-1, compare=False)  # decoded: where it starts in the byte stream


def encode_frame(frame: Frame) -> bytes:
    """Serialise a frame; raises FrameError naming the bad field."""
    if not 0 <= frame.sensor <= 0xFF:
        raise FrameError(f"sensor id must be 0..255, got {frame.sensor}")
    if len(frame.payload) > MAX_PAYLOAD:
        raise FrameError(
            f"payload is {len(frame.payload)} bytes, max {MAX_PAYLOAD}: split it into several frames"
        )
    if not -(2**63) <= frame.ts_ms < 2**63:
        raise FrameError(f"timestamp {frame.ts_ms} ms does not fit in int64")
    body = _HEADER.pack(frame.version, frame.sensor, len(frame.payload), frame.seq & 0xFFFFFFFF,
                        frame.ts_ms) + frame.payload
    return SYNC + body + struct.pack("<I", zlib.crc32(body))


@dataclass
class DecoderStats:
    """Counters kept by FrameDecoder; every byte that is not part of a good frame is counted."""

    frames_ok: int = 0
    bytes_ok: int = 0
    bytes_rejected: int = 0
    crc_errors: int = 0
    bad_length: int = 0
    bad_version: int = 0
    resyncs: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class FrameDecoder:
    """Streaming decoder. `feed(chunk)` returns the frames completed by that chunk."""

    stats: DecoderStats = field(default_factory=DecoderStats)
    offset: int = 0  # the stream position of the first buffered byte (a resumed trace starts later)
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        pos = 0
        while True:
            start = buf.find(SYNC, pos)
            if start < 0:
                # keep a trailing 0xA5 (it may be the first half of a sync word)
                keep = 1 if len(buf) > pos and buf[-1] == SYNC[0] else 0
                self._reject(len(buf) - pos - keep)
                pos = len(buf) - keep
                break
            if start > pos:
                self._reject(start - pos)
                self.stats.resyncs += 1
            pos = start
            if len(buf) - pos < HEADER_SIZE:
                break
            version, sensor, length, seq, ts_ms = _HEADER.unpack_from(buf, pos + 2)
            if version != VERSION or length > MAX_PAYLOAD:
                if version != VERSION:
                    self.stats.bad_version += 1
                else:
                    self.stats.bad_length += 1
                self._reject(1)
                pos += 1
                continue
            end = pos + HEADER_SIZE + length + CRC_SIZE
            if len(buf) < end:
                break
            (crc,) = struct.unpack_from("<I", buf, end - CRC_SIZE)
            if zlib.crc32(memoryview(buf)[pos + 2 : end - CRC_SIZE]) != crc:
                self.stats.crc_errors += 1
                self._reject(1)
                pos += 1
                continue
            payload = bytes(buf[pos + HEADER_SIZE : end - CRC_SIZE])
            out.append(Frame(sensor=sensor, seq=seq, ts_ms=ts_ms, payload=payload, version=version,
                             offset=self.offset + pos))
            self.stats.frames_ok += 1
            self.stats.bytes_ok += end - pos
            pos = end
        del buf[:pos]
        self.offset += pos
        return out

    def flush(self) -> list[Frame]:
        """End of stream: rescan what is buffered past any false header and return the frames
        still recoverable; every byte that is not part of one is counted as rejected."""
        out: list[Frame] = []
        while self._buf:
            rest = bytes(self._buf[1:])
            self._buf.clear()
            self.offset += 1
            self._reject(1)
            out += self.feed(rest)
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered waiting for the rest of a frame."""
        return len(self._buf)

    def _reject(self, n: int) -> None:
        if n > 0:
            self.stats.bytes_rejected += n
