"""Broker SIGKILLed and restarted during a load: nothing the devices accepted is lost or doubled.

CI size: 2 devices x 5,000 events, 5 SIGKILLs (scripts/chaos runs 100k events, 20 kills).
"""

from __future__ import annotations

import random
import shutil
import time
from typing import Any

import pytest
from brokers import MosquittoBroker
from test_reliability_harness import (
    CloudProcess,
    DeviceSpec,
    LoadDevice,
    check,
    device_thread,
    fast_dir,
    print_table,
    random_kill_times,
)

MIX = ("event", "summary", "summary", "summary")


def broker_kill_run(broker: MosquittoBroker, *, devices: int = 2, events: int = 10_000,
                    kills: int = 5, rate: float = 1000.0, seed: int = 1,
                    drain_timeout: float = 120.0) -> dict[str, Any]:
    """Run the scenario on a started broker; returns the measured row (see Outcome.row)."""
    rng = random.Random(seed)
    work = fast_dir()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    try:
        cloud.start().wait_serving()
        per = events // devices
        # a quarter events (each gets a notification decision in the cloud), the rest summaries
        specs = [DeviceSpec(f"chaos-b{i}", work / f"dev{i}", broker.url, kinds=MIX)
                 for i in range(devices)]
        results: list[dict[str, Any]] = []
        t0 = time.monotonic()
        threads = [device_thread(s, per, rate / devices, results, drain_timeout) for s in specs]
        expected_s = per / (rate / devices)
        for at in random_kill_times(rng, kills, 0.5, max(1.0, expected_s), min_gap=2.0):
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            broker.restart(hard=True, down_for=rng.uniform(0.2, 1.0))
        for t in threads:
            t.join(drain_timeout + expected_s + 30)
        took = time.monotonic() - t0
        cloud.stop()
        out = check(specs, work / "cloud.db")
        row = {"scenario": "broker SIGKILL", "kills": kills, **out.row(),
               "connects": sum(r["connects"] for r in results),
               "disconnects": sum(r["disconnects"] for r in results), "seconds": round(took, 1)}
        row["_outcome"] = out
        return row
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_broker_sigkilled_5_times_during_10k_events(mosquitto: MosquittoBroker) -> None:
    row = broker_kill_run(mosquitto, devices=2, events=10_000, kills=5)
    out = row.pop("_outcome")
    print_table("broker kills", [row])
    assert mosquitto.starts == 6
    assert out.accepted == 10_000
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert out.pending == 0, "backlog did not drain"
    assert out.stored == 10_000
    assert out.events_stored == 2_500 and out.events_without_decision == 0
    assert out.evicted == 0 == out.evicted_counted
    assert out.integrity and all(v == "ok" for v in out.integrity.values())


@pytest.mark.slow
def test_reconnects_after_a_broker_restart_are_jittered(mosquitto: MosquittoBroker) -> None:
    """After a broker restart the devices do not all reconnect in the same instant (thundering
    herd): the reconnect backoff carries uniform(0.5, 1.5) jitter (shared/mqtt.py rearm_backoff)."""
    work = fast_dir()
    devs = [LoadDevice(DeviceSpec(f"jit-{i}", work / f"d{i}", mosquitto.url, kinds=("summary",)))
            for i in range(8)]
    try:
        for d in devs:
            d.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(d.connects for d in devs):
            for d in devs:
                d.pump()
            time.sleep(0.005)
        t0 = time.monotonic()
        mosquitto.restart(hard=True)
        while time.monotonic() - t0 < 15 and not all(any(t > t0 for t in d.connects)
                                                      for d in devs):
            for d in devs:
                d.pump()
            time.sleep(0.002)
        firsts = [min(t for t in d.connects if t > t0) - t0 for d in devs]
        spread = max(firsts) - min(firsts)
        print(f"\nreconnects after a broker restart: {min(firsts):.3f}-{max(firsts):.3f} s, "
              f"spread {spread * 1000:.0f} ms over {len(devs)} devices")
        assert spread >= 0.2
    finally:
        for d in devs:
            d.close()
        shutil.rmtree(work, ignore_errors=True)
