"""One reader interface for sensor bytes: a serial port (pyserial URL or device path) or a trace file."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import serial

from device.errors import SourceError

logger = logging.getLogger(__name__)
NOT_DEVICES = ("/dev/shm/",)  # under /dev, yet files (traces): every other missing /dev path is a device
SERIAL_URLS = ("loop://", "socket://", "rfc2217://", "spy://", "alt://", "hwgrep://")


class ByteSource(Protocol):
    eof: bool

    def read(self) -> bytes:
        """Return available bytes (possibly empty after a short timeout)."""

    def backlog(self) -> int:
        """Bytes waiting to be read (how far the agent is behind the sensor)."""

    def close(self) -> None: ...


class SerialSource:
    """pyserial port; a disconnect (the pty's other end closed) ends the stream."""

    def __init__(self, url: str, baudrate: int = 115200, timeout: float = 0.05) -> None:
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, ValueError) as exc:
            raise SourceError(f"cannot open serial port {url!r}: {exc}; check the path/URL and permissions") from None
        self.eof = False

    def read(self) -> bytes:
        try:
            n = self.port.in_waiting
            return bytes(self.port.read(max(n, 1) if n < 65536 else 65536))
        except (serial.SerialException, OSError) as exc:
            logger.info("reader.disconnected", extra={"reason": str(exc)})
            self.eof = True
            return b""

    def backlog(self) -> int:
        try:
            return int(self.port.in_waiting)
        except (serial.SerialException, OSError):
            return 0

    def close(self) -> None:
        self.port.close()


class TraceSource:
    """A recorded trace file of raw frames (as written by ``edgeloop sim --trace``)."""

    def __init__(self, path: str | Path, chunk: int = 65536) -> None:
        try:
            self.f = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise SourceError(f"cannot open trace file {path}: {exc.strerror}; pass an existing trace file, "
                              "a serial port (/dev/ttyUSB0) or a pyserial URL") from None
        self.size = Path(path).stat().st_size
        self.chunk = chunk
        self.eof = False

    def read(self) -> bytes:
        data = self.f.read(self.chunk)
        if not data:
            self.eof = True
        return data

    def backlog(self) -> int:
        return 0  # a file never runs ahead of the agent

    def key(self) -> str:
        """What identifies this recording for a resume: its path and first 4 KiB (a file that
        grows keeps its key; another recording at the same path does not)."""
        here = self.f.tell()
        self.f.seek(0)
        head = self.f.read(4096)
        self.f.seek(here)
        return hashlib.sha256(str(Path(self.f.name).resolve()).encode() + b"\0" + head).hexdigest()

    def seek(self, pos: int) -> None:
        """Continue reading at byte ``pos`` (where an earlier run got to)."""
        self.f.seek(pos)
        self.eof = False

    def close(self) -> None:
        self.f.close()


def open_source(spec: str, baudrate: int = 115200) -> ByteSource:
    """A pyserial URL or a character device (a tty, a pty) opens with pyserial; a regular file
    (even one under /dev/shm) is read as a trace."""
    if spec.startswith(SERIAL_URLS) or _is_char_device(spec):
        return SerialSource(spec, baudrate)
    return TraceSource(spec)


def check_source(spec: str) -> None:
    """Raise :class:`SourceError` now for a source that can never work: none given, or a trace
    file that is not there (a serial device that is not there yet is waited for)."""
    if not spec:
        raise SourceError("no source: pass --source (a serial port such as /dev/ttyUSB0, a pyserial URL "
                          "or a trace file) or set source in the config")
    if not (spec.startswith(SERIAL_URLS) or _is_char_device(spec)):
        TraceSource(spec).close()


def awaits_device(spec: str) -> bool:
    """True for a serial device path that is not there yet (a USB collar plugged in later): the
    agent waits for it. A missing regular file is a trace that is not there: an error at once."""
    return not spec.startswith(SERIAL_URLS) and not os.path.exists(spec) and _is_char_device(spec)


def wait_for_source(spec: str, baudrate: int, stop: threading.Event, idle: Callable[[], None] | None = None,
                    first: float = 0.5, longest: float = 5.0, retry_open: bool = False) -> ByteSource | None:
    """Open ``spec``; a serial device that is absent is waited for (logged once, then polled with
    a backoff from ``first`` to ``longest`` seconds, ``idle`` called about every 0.2 s meanwhile).
    None when ``stop`` is set first. A device that is there but cannot be opened is an error,
    unless ``retry_open`` (a device coming back after it went away may not be ready at once)."""
    delay, t0, waited = first, time.monotonic(), False
    while True:
        reason = "not there"
        if not awaits_device(spec):
            try:
                src = open_source(spec, baudrate)
            except SourceError as exc:
                if not retry_open:
                    raise
                reason = str(exc)
            else:
                if waited:
                    logger.info("reader.appeared", extra={"source": spec,
                                                          "waited_s": round(time.monotonic() - t0, 1)})
                return src
        if not waited:
            waited = True
            logger.warning("reader.waiting", extra={
                "source": spec, "hint": f"waiting for {spec} to appear (plug the device in); "
                "retrying with backoff", "reason": reason, "retry_max_s": longest})
        until = time.monotonic() + delay
        while (left := until - time.monotonic()) > 0:
            if stop.wait(min(left, 0.2)):
                return None
            if idle is not None:
                idle()
        delay = min(delay * 2, longest)


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:  # not there (yet): a device path names a serial port; let pyserial name the problem
        return ((path.startswith("/dev/") and not path.startswith(NOT_DEVICES))
                or (path.startswith("COM") and path[3:].isdigit()))
