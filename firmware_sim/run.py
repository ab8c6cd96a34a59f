"""``edgeloop sim``: stream a simulated device into a pty, a file descriptor or a trace file.

With ``--pty`` the simulator behaves like a device that holds its data until the host opens the
port: it prints the pty's path, waits until a reader has opened it *and configured it* (pyserial
sets the speed and flushes the input queue when it opens a port: bytes written before that are
lost, the device-info frame first), streams, and exits once the stream is complete and the reader
has closed the port. If the reader goes away mid-stream, the simulator waits for the next one.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import termios
import time
import tty
from pathlib import Path

from firmware_sim.collar import CollarSim
from firmware_sim.perception import PerceptionSim, default_unit
from firmware_sim.scenario import default_fleet, write_ground_truth
from shared.errors import InputError

logger = logging.getLogger(__name__)
# The pty's speed while nobody has configured it: no reader asks for 50 baud, so a change means a
# reader opened the port and set it up (pyserial: tcsetattr, then it flushes the input queue).
MARKER_SPEED = termios.B50
SETTLE_S = 0.2  # after the reader's set-up, for its input flush to pass
CONFIGURE_WAIT_S = 2.0  # a reader that never sets the port up (cat, dd) gets the stream after this


def make_sim(args: argparse.Namespace) -> CollarSim | PerceptionSim:
    if args.kind == "perception":
        unit = default_unit(args.days, args.seed)
        if args.ground_truth:
            write_ground_truth([unit], args.start, Path(args.ground_truth))
        return PerceptionSim(unit, args.start, args.days)
    fleet = default_fleet(max(args.fleet, args.index + 1), args.days, args.seed)
    if args.ground_truth:
        write_ground_truth([fleet[args.index]], args.start, Path(args.ground_truth))
    return CollarSim(fleet[args.index], args.start, args.days, full_rate=args.full_rate)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def open_pty() -> tuple[int, str]:
    """A raw pty at the marker speed; returns (master fd, slave path). The slave is closed here,
    so the master reports POLLHUP until a reader opens the path."""
    master, slave = os.openpty()
    tty.setraw(slave)  # binary stream: no echo, no CR/LF translation
    attrs = termios.tcgetattr(slave)
    attrs[4] = attrs[5] = MARKER_SPEED
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    path = os.ttyname(slave)
    os.close(slave)
    return master, path


def reader_present(master: int) -> bool:
    """True while some process holds the pty's slave side open."""
    p = select.poll()
    p.register(master, select.POLLHUP)
    return not any(ev & select.POLLHUP for _, ev in p.poll(0))


def wait_for_reader(master: int, poll_s: float = 0.05) -> None:
    """Block until a reader has opened the pty and set it up (or CONFIGURE_WAIT_S has passed)."""
    while not reader_present(master):
        time.sleep(poll_s)
    deadline = time.monotonic() + CONFIGURE_WAIT_S
    while termios.tcgetattr(master)[4] == MARKER_SPEED and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(SETTLE_S)
    logger.info("sim.reader_connected")


def wait_for_reader_to_leave(master: int, poll_s: float = 0.2) -> None:
    while reader_present(master):
        time.sleep(poll_s)


def run_sim(args: argparse.Namespace) -> int:
    sim = make_sim(args)
    if args.trace:
        try:
            f = open(args.trace, "wb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise InputError(f"--trace {args.trace}: cannot write it ({exc.strerror}): pass a path in a "
                             "writable folder") from None
        with f:
            for _, chunk in sim.chunks():
                f.write(chunk)
            f.write(sim.end_frame())
        print(f"wrote {args.trace} ({os.path.getsize(args.trace)} bytes)")
        return 0
    if args.pty:
        fd, path = open_pty()
        print(path, flush=True)  # open this with the agent: --source /dev/pts/N
        print(f"waiting for a reader on {path}", file=sys.stderr, flush=True)
        try:
            wait_for_reader(fd)
        except KeyboardInterrupt:
            return 130
    else:
        fd = args.out_fd
    t0 = time.monotonic()
    for t, chunk in sim.chunks():
        if args.speed > 0:
            ahead = t / args.speed - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        if args.pty and not reader_present(fd):
            logger.warning("sim.reader_left", extra={"sim_ts": t})
            wait_for_reader(fd)
        write_all(fd, chunk)
    write_all(fd, sim.end_frame())
    if args.pty:
        print("stream complete; exits when the reader closes the port", file=sys.stderr, flush=True)
        try:
            wait_for_reader_to_leave(fd)
        except KeyboardInterrupt:
            return 130
    return 0
