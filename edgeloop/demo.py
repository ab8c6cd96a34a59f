"""``edgeloop demo``: simulated collars -> real ptys -> agent processes -> MQTT -> cloud -> report.

Each collar is a ``edgeloop sim`` process writing into its own pseudo-terminal; each agent is an
``edgeloop agent`` process that opens the pty with pyserial as it would open /dev/ttyUSB0. The
cloud aggregator runs in this process. Without ``--broker`` an embedded amqtt broker is started
on a free port (zero setup); with it, any MQTT broker (Mosquitto in production) is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any, Literal, cast

from cloud.aggregator.clock import RecordClock
from cloud.broker import EmbeddedBroker
from cloud.config import CloudConfig
from cloud.run import build
from cloud.store.backend import redact
from cloud.store.db import CloudStore
from edgeloop.demo_report import build_report
from firmware_sim.perception import default_unit
from firmware_sim.scenario import DEMO_START, default_fleet, write_ground_truth
from shared.errors import InputError
from shared.mqtt import MqttConfig
from shared.signing import generate_keypair, save_private_key, save_public_key


class CollectNotifier:
    """The demo's owner channel: keeps what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def send(self, decision: Any, event_body: dict[str, Any]) -> None:
        self.sent.append((decision, event_body))


def _warm_kernels() -> None:
    """Compile (or load) the Numba kernels once here, so agent processes find the cache warm."""
    import numpy as np

    from device.detect.engine import Engine

    Engine(("a", "b", "c")).process(DEMO_START + 60.0 * np.arange(3.0), np.ones((3, 3)))


def run_demo(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    if args.db:  # the report counts what this run stored: the store must start empty
        existing = CloudStore(args.db)
        held = existing.count()
        existing.close()
        if held:
            raise InputError(f"--db {redact(args.db)} already holds {held} records: the demo needs an empty "
                             "store (create a new database, or leave --db out for OUT/cloud.db)")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "devices").mkdir(parents=True)
    _say(f"edgeloop demo: {args.collars} collars x {args.days:g} simulated days -> {out}/")
    _warm_kernels()
    broker = None if args.broker else EmbeddedBroker().start()
    url = args.broker or broker.url  # type: ignore[union-attr]
    protocol = args.protocol or ("3.1.1" if broker else "5")
    _say(f"broker: {'embedded amqtt ' if broker else ''}{url} (MQTT {protocol})")
    priv, pub = generate_keypair()
    save_private_key(out / "cloud.key", priv)
    save_public_key(out / "cloud.pub", pub)
    fleet = default_fleet(args.collars, args.days, args.seed)
    # one Raspberry Pi perception unit beside the collars (a gate camera; --perception 0: none)
    units = [default_unit(args.days)] if args.perception else []
    write_ground_truth(fleet + units, DEMO_START, out / "ground_truth.json")

    mqtt_cfg = MqttConfig(url=url, protocol=cast(Literal["5", "3.1.1"], protocol))
    db = args.db or str(out / "cloud.db")
    cloud_cfg = CloudConfig(db=db, shared_subscription=broker is None, mqtt=mqtt_cfg,
                            signing_key=str(out / "cloud.key"))
    notifier = CollectNotifier()
    # a fresh client id per run: a persistent session left on a shared broker by an earlier run
    # must not deliver that run's messages into this store
    svc = build(cloud_cfg, client_suffix=f"-demo-{os.getpid()}", notifiers=[notifier], clock=RecordClock())
    svc.start()
    if not svc.connected.wait(15):
        raise RuntimeError(f"cloud could not connect to the broker at {url}")
    stop = threading.Event()
    worker = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    worker.start()

    exe = [sys.executable, "-m", "edgeloop.cli"]
    procs: list[dict[str, Any]] = []
    logs = []
    for ind in fleet + units:
        log = open(out / "devices" / f"{ind.device_id}.log", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        master, slave = os.openpty()
        tty.setraw(slave)
        # no --kind: each agent learns its device's kind from the device-info frame
        agent = subprocess.Popen(
            [*exe, "agent", "--source", os.ttyname(slave), "--device-id", ind.device_id,
             "--individual-id", ind.individual_id, "--state-dir", str(out / "devices" / ind.device_id),
             "--broker", url, "--protocol", protocol, "--cloud-public-key", str(out / "cloud.pub"),
             "--exit-on-eof", "--progress"],
            stdout=subprocess.PIPE, stderr=log, text=True)
        procs.append({"ind": ind, "agent": agent, "fds": (master, slave)})
    for i, p in enumerate(procs):
        _wait_ready(p, p["ind"].device_id)
        which = ["--kind", "perception"] if p["ind"].kind == "perception" else ["--index", str(i), "--fleet",
                                                                                str(args.collars)]
        p["sim"] = subprocess.Popen(
            [*exe, "sim", *which, "--days", str(args.days),
             "--seed", str(args.seed), "--out-fd", str(p["fds"][0])], pass_fds=[p["fds"][0]])
        threading.Thread(target=_read_agent, args=(p,), daemon=True).start()

    total_minutes = args.days * 1440 * len(procs)
    while any(p["agent"].poll() is None for p in procs):
        done = sum(p["progress"].get("windows", 0) for p in procs)
        events = sum(p["progress"].get("events", 0) for p in procs)
        _progress(f"[{time.monotonic() - t_start:5.1f} s] simulated {done / 1440 / len(procs):5.2f}/{args.days:g} days "
                  f"({100 * done / total_minutes:3.0f}%)  events {events}  cloud stored {svc.agg.counts['records_new']}"
                  f"  alerts {svc.agg.counts['decision.notify']}")
        time.sleep(0.5)
    for log in logs:
        log.close()
    for p in procs:
        p["sim"].wait(10)
        for fd in p["fds"]:
            os.close(fd)
    appended = sum(_final(p).get("outbox", {}).get(k, 0) for p in procs
                   for k in ("appended.event", "appended.summary", "appended.report", "appended.raw"))
    deadline = time.monotonic() + 10
    while svc.agg.store.count() < appended and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    worker.join(5)
    svc.drain()
    svc.stop()
    if broker:
        broker.stop()
    _progress("")
    finals = {p["ind"].device_id: _final(p) for p in procs}
    text = build_report(svc.agg.store, fleet, DEMO_START, finals, notifier.sent, out,
                        elapsed=time.monotonic() - t_start, units=units)
    (out / "report.txt").write_text(text)
    print(text)
    failed = [d for d, f in finals.items() if not f]
    return 1 if failed else 0


def _wait_ready(p: dict[str, Any], device_id: str) -> None:
    """Wait for the agent's first progress line: its serial port is open (pyserial flushes the
    input buffer on open, so a sensor that talks earlier loses its first bytes, as hardware would)."""
    line = p["agent"].stdout.readline()
    if not line:
        raise RuntimeError(f"agent {device_id} exited before opening its port (see its log)")
    p["progress"], p["final"] = json.loads(line), None


def _read_agent(p: dict[str, Any]) -> None:
    for line in p["agent"].stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "final" in msg:
            p["final"] = msg["final"]
        else:
            p["progress"] = msg


def _final(p: dict[str, Any]) -> dict[str, Any]:
    return p["final"] or {}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_last_progress = [0.0]


def _progress(msg: str) -> None:
    """A live line on a terminal; a line every 5 s in logs."""
    if sys.stderr.isatty():
        print(f"\r{msg:<110}", end="" if msg else "\n", file=sys.stderr, flush=True)
    elif msg and time.monotonic() - _last_progress[0] >= 5.0:
        _last_progress[0] = time.monotonic()
        _say(msg)
