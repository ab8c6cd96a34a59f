"""Network cuts and half-open links between the devices and the broker (tests/faultproxy.py).

Cuts (connections reset, then refused for a while) and blackholes (half-open: nothing flows and
nothing closes) three times each during a load: 0 lost, and a dead link is noticed by the
device's keepalive. The devices use keepalive K = 2 s here (production default 30 s).
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from typing import Any

import pytest
from brokers import MosquittoBroker
from faultproxy import FaultProxy
from test_reliability_harness import (
    CloudProcess,
    DeviceSpec,
    LoadDevice,
    check,
    device_thread,
    fast_dir,
    print_table,
)

KEEPALIVE = 2


def _wait_all(devs: list[LoadDevice], attr: str, after: float, timeout: float) -> float | None:
    """Seconds from `after` until every device recorded a `attr` event after it, or None."""
    deadline = after + timeout
    while time.monotonic() < deadline:
        times = [next((t for t in getattr(d, attr) if t > after), None) for d in devs]
        if all(t is not None for t in times):
            return max(times) - after  # type: ignore[type-var, operator]
        time.sleep(0.01)
    return None


def network_run(broker: MosquittoBroker, *, devices: int = 2, records: int = 4000,
                cuts: int = 3, blackholes: int = 3, rate: float = 250.0,
                seed: int = 4) -> dict[str, Any]:
    rng = random.Random(seed)
    work = fast_dir()
    proxy = FaultProxy(broker.port).start()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    try:
        cloud.start().wait_serving()
        specs = [DeviceSpec(f"chaos-n{i}", work / f"dev{i}", proxy.url, keepalive=KEEPALIVE,
                            reconnect_max=1.0, kinds=("event", "summary", "summary"))
                 for i in range(devices)]
        results: list[dict[str, Any]] = []
        devs: list[LoadDevice] = []
        t0 = time.monotonic()
        release = threading.Event()  # devices stay online through every fault, then drain
        threads = [device_thread(s, records // devices, rate / devices, results, 120.0,
                                 holder=devs, release=release) for s in specs]
        assert _wait_all_connected(devs, devices, 15), "devices never connected"
        faults = ["cut"] * cuts + ["blackhole"] * blackholes
        rng.shuffle(faults)
        detect: list[float] = []
        for fault in faults:
            time.sleep(rng.uniform(0.5, 1.5))
            start = time.monotonic()
            if fault == "cut":
                proxy.refuse()
                proxy.cut()
                time.sleep(rng.uniform(0.5, 1.5))
                proxy.pass_through()
            else:
                proxy.blackhole()
                took = _wait_all(devs, "disconnects", start, 6 * KEEPALIVE)
                proxy.pass_through()
                detect.append(took if took is not None else float("inf"))
            assert _wait_all(devs, "connects", start, 20) is not None, f"no reconnect after {fault}"
        release.set()
        for t in threads:
            t.join(200)
        took_all = time.monotonic() - t0
        cloud.stop()
        out = check(specs, work / "cloud.db")
        row = {"scenario": "network cut/half-open", "cuts": cuts, "blackholes": blackholes,
               **out.row(), "keepalive": KEEPALIVE,
               "detect_max_s": round(max(detect, default=0.0), 2),
               "detect_max_xK": round(max(detect, default=0.0) / KEEPALIVE, 2),
               "proxy_cuts": proxy.stats.cuts, "seconds": round(took_all, 1)}
        row["_outcome"] = out
        row["_detect"] = detect
        return row
    finally:
        cloud.stop()
        proxy.stop()
        shutil.rmtree(work, ignore_errors=True)


def _wait_all_connected(devs: list[LoadDevice], n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(devs) == n and all(d.connects for d in devs):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_network_cut_and_half_open_3_times_each(mosquitto: MosquittoBroker) -> None:
    row = network_run(mosquitto)
    out, detect = row.pop("_outcome"), row.pop("_detect")
    print_table("network faults", [row])
    assert out.accepted == 4000
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert out.pending == 0 and out.stored == 4000 and out.evicted == 0
    assert len(detect) == 3 and all(d < float("inf") for d in detect), detect
    # paho notices a silent link K after its PINGREQ went unanswered: at most 2 K (+ slack)
    assert max(detect) <= 1.5 * KEEPALIVE + 1.2, detect  # + paho's 1 s loop tick


@pytest.mark.slow
def test_dead_link_detected_by_keepalive(mosquitto: MosquittoBroker) -> None:
    work = fast_dir()
    proxy = FaultProxy(mosquitto.port).start()
    cloud = CloudProcess(work / "cloud.db", mosquitto.url).start()
    dev = LoadDevice(DeviceSpec("chaos-ka", work / "dev", proxy.url, keepalive=KEEPALIVE,
                                kinds=("summary",)))
    try:
        cloud.wait_serving()
        dev.start()
        deadline = time.monotonic() + 10
        while not dev.connects and time.monotonic() < deadline:
            dev.pump()
            time.sleep(0.01)
        for _ in range(100):  # traffic both ways (uplinks and cloud acks) up to the fault
            dev.produce(1)
            dev.pump()
            time.sleep(0.01)
        start = time.monotonic()
        proxy.blackhole()
        while not dev.disconnects and time.monotonic() - start < 6 * KEEPALIVE:
            dev.produce(1)
            dev.pump()
            time.sleep(0.01)
        took = dev.disconnects[0] - start if dev.disconnects else float("inf")
        print(f"\nhalf-open link noticed after {took:.2f} s = {took / KEEPALIVE:.2f} K")
        # paho 2.2: PINGREQ after K s with nothing received, give up K s after that. Under
        # load this lands between 1.5 K and 2 K (measured 1.54-2.05 K), so the 1.5 K that
        # MqttConfig.keepalive documents is not a bound: see docs/production.md
        assert took <= 1.5 * KEEPALIVE + 1.2  # + paho's 1 s loop tick
    finally:
        proxy.pass_through()
        dev.close()
        cloud.stop()
        proxy.stop()
        shutil.rmtree(work, ignore_errors=True)
