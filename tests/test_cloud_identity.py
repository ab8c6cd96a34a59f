"""Two ``edgeloop cloud`` processes with default settings share the work on one broker: unique client
ids, no session takeovers, every record stored once; a named instance that is already connected is
not fought over (MQTT 5 session takeover stops the older process with a clear line)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker

from cloud.config import CloudConfig
from cloud.presence import Presence, holder_alive, me, must_yield
from shared import schemas, topics

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
T0 = 1767571200.0


def _cloud(tmp_path: Path, name: str, url: str, db: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], Path]:
    conf = tmp_path / f"{name}.toml"
    conf.write_text(f"stats_every = 0.5\n{extra}[mqtt]\nreconnect_min = 0.2\nreconnect_max = 1.0\n")
    log = tmp_path / f"{name}.log"
    with open(log, "w") as err:
        p = subprocess.Popen([*EDGELOOP, "cloud", "--config", str(conf), "--db", str(db), "--broker", url,
                              "--log-format", "json"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return p, log


def _events(log: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]


def _wait(pred, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _stop(p: subprocess.Popen[bytes]) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    return p.wait(30)


def test_default_client_id_is_unique_per_process() -> None:
    other = subprocess.run([sys.executable, "-c", "from cloud.config import CloudConfig; print(CloudConfig().client_id)"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    mine = CloudConfig().client_id
    assert mine.startswith("edgeloop-cloud-") and other.startswith("edgeloop-cloud-") and mine != other
    assert CloudConfig(instance="east").client_id == "edgeloop-east"


@pytest.mark.mosquitto
def test_two_default_aggregators_share_the_work_and_store_each_record_once(
        tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    db = tmp_path / "cloud.db"
    a, log_a = _cloud(tmp_path, "a", mosquitto.url, db)
    b, log_b = _cloud(tmp_path, "b", mosquitto.url, db)
    try:
        assert _wait(lambda: all(any(e["event"] == "cloud.connected" for e in _events(lg)) for lg in (log_a, log_b)))
        ids = {next(e["client_id"] for e in _events(lg) if e["event"] == "cloud.connected") for lg in (log_a, log_b)}
        assert len(ids) == 2, f"the two aggregators took the same client id: {ids}"
        time.sleep(0.5)  # both shared subscriptions in place
        devices = [f"collar-{i:03d}" for i in range(5)]
        batches = []
        for n in range(40):
            for d in devices:
                recs = tuple(schemas.Record(n * 3 + k + 1, "summary", T0 + n * 60 + k, f"ind-{d}", {"n": n})
                             for k in range(3))
                batches.append((topics.uplink(d), schemas.encode(schemas.UplinkBatch(d, recs))))
        with Collector.connect(mosquitto, "acks") as acks:
            acks.subscribe(f"{topics.ROOT}/dev/+/ack")
            acks.publish_many(batches)
            acks.publish_many(batches[:25])  # redelivered: stored once, acked again
            assert acks.wait_for(len(batches) + 25, timeout=60), f"{len(acks.messages)} acks"
        time.sleep(1.2)  # one more stats line each
    finally:
        rc_a, rc_b = _stop(a), _stop(b)
    assert (rc_a, rc_b) == (0, 0), (log_a.read_text()[-2000:], log_b.read_text()[-2000:])
    rows = sqlite3.connect(db).execute("SELECT COUNT(*), COUNT(DISTINCT device_id || ':' || seq) FROM records").fetchone()
    assert rows == (600, 600), "every record stored exactly once"
    handled = []
    for lg in (log_a, log_b):
        ev = _events(lg)
        assert [e["event"] for e in ev].count("cloud.connected") == 1, "no flapping: one connect per process"
        assert not [e for e in ev if e["event"] in ("cloud.disconnected", "cloud.client_id_taken")]
        handled.append(max(e["messages"] for e in ev if e["event"] == "cloud.stats"))
    assert all(h > 0 for h in handled), f"the work is shared between both aggregators: {handled}"
    assert sum(h for h in handled) >= 225, handled


@pytest.mark.mosquitto
def test_a_named_instance_held_by_a_live_process_refuses_to_start(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    first, log1 = _cloud(tmp_path, "first", mosquitto.url, tmp_path / "one.db", extra="instance = 'twin'\n")
    try:
        assert _wait(lambda: any(e["event"] == "cloud.connected" for e in _events(log1)))
        second, log2 = _cloud(tmp_path, "second", mosquitto.url, tmp_path / "two.db", extra="instance = 'twin'\n")
        assert second.wait(30) == 1
        err = log2.read_text()
        assert "client id edgeloop-twin is in use by another aggregator" in err
        assert f"pid {first.pid}" in err and "instance" in err
        assert not any(e["event"] == "cloud.connected" for e in _events(log2)), "it never connected"
        time.sleep(1.5)
        ev1 = [e["event"] for e in _events(log1)]
        assert ev1.count("cloud.connected") == 1 and "cloud.disconnected" not in ev1, "the first was not knocked off"
    finally:
        assert _stop(first) == 0
    # a clean stop leaves 'stopped': the instance can be taken again
    third, log3 = _cloud(tmp_path, "third", mosquitto.url, tmp_path / "one.db", extra="instance = 'twin'\n")
    try:
        assert _wait(lambda: any(e["event"] == "cloud.connected" for e in _events(log3)))
    finally:
        assert _stop(third) == 0


def test_the_later_of_two_racing_processes_yields() -> None:
    old = Presence("twin", "online", "other-host", 10, 1000.0, "edgeloop-twin")
    new = Presence("twin", "online", "other-host", 20, 2000.0, "edgeloop-twin")
    assert must_yield(old, new) and not must_yield(new, old)
    assert not must_yield(new, new), "its own status"
    assert not must_yield(Presence("twin", "offline", "h", 1, 1.0), new), "an offline holder"
    assert not must_yield(None, new) and Presence.decode(b"not json") is None
    dead = Presence("twin", "online", me("twin", "x").host, 2**22 + 12345, 1.0)  # no such pid here
    assert not holder_alive(dead, me("twin", "x")), "a killed process on this host does not hold it"
