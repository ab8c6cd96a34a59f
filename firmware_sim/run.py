"""``edgeloop sim``: stream a simulated device into a pty, a file descriptor or a trace file."""

from __future__ import annotations

import argparse
import os
import sys
import time
import tty
from pathlib import Path

from firmware_sim.collar import CollarSim
from firmware_sim.perception import PerceptionSim, default_unit
from firmware_sim.scenario import default_fleet, write_ground_truth


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


def run_sim(args: argparse.Namespace) -> int:
    sim = make_sim(args)
    if args.trace:
        with open(args.trace, "wb") as f:
            for _, chunk in sim.chunks():
                f.write(chunk)
            f.write(sim.end_frame())
        print(f"wrote {args.trace} ({os.path.getsize(args.trace)} bytes)")
        return 0
    if args.pty:
        master, slave = os.openpty()
        tty.setraw(slave)  # binary stream: no echo, no CR/LF translation
        print(os.ttyname(slave), flush=True)  # open this with the agent: --source /dev/pts/N
        fd = master
    else:
        fd = args.out_fd
    t0 = time.monotonic()
    for t, chunk in sim.chunks():
        if args.speed > 0:
            ahead = t / args.speed - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        write_all(fd, chunk)
    write_all(fd, sim.end_frame())
    if args.pty:
        print("stream complete; Ctrl-C to close the pty", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0
