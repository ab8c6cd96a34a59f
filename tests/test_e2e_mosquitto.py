"""End to end on real parts: simulated collars -> real ptys -> agent processes (pyserial) ->
a private Mosquitto -> the cloud aggregator -> alerts. Every record an agent wrote is stored in
the cloud exactly once; an injected illness produces an alert, one-off excitement does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgdb import scratch_database

from cloud.config import CloudConfig
from cloud.run import build
from firmware_sim.scenario import DEMO_START, default_fleet
from shared.mqtt import MqttConfig

DAYS = 8.0


class Keep:
    def __init__(self) -> None:
        self.sent: list = []  # type: ignore[type-arg]

    def send(self, decision, body) -> None:  # type: ignore[no-untyped-def]
        self.sent.append((decision, body))


def start_agent(tmp: Path, ind, index: int, url: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    master, slave = os.openpty()
    tty.setraw(slave)
    exe = [sys.executable, "-m", "edgeloop.cli"]
    with open(tmp / f"{ind.device_id}.log", "w") as log:
        agent = subprocess.Popen(
            [*exe, "agent", "--source", os.ttyname(slave), "--device-id", ind.device_id, "--state-dir",
             str(tmp / ind.device_id), "--broker", url, "--exit-on-eof", "--progress"],
            stdout=subprocess.PIPE, stderr=log, text=True)
    assert agent.stdout is not None
    first = agent.stdout.readline()  # the port is open
    assert first, (tmp / f"{ind.device_id}.log").read_text()
    sim = subprocess.Popen([*exe, "sim", "--index", str(index), "--fleet", "5", "--days", str(DAYS),
                            "--out-fd", str(master)], pass_fds=[master])
    return {"agent": agent, "sim": sim, "fds": (master, slave)}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The cloud's store on each back end: a SQLite file, or a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "cloud.db")
        return
    with scratch_database() as url:
        yield url


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_collars_through_pty_agent_mosquitto_cloud(tmp_path: Path, mosquitto, store_url: str) -> None:  # type: ignore[no-untyped-def]
    fleet = default_fleet(5, DAYS)
    chosen = {0: fleet[0], 4: fleet[4]}  # bella: illness; daisy: only one-off excitement
    assert fleet[0].conditions[0].kind == "illness"
    assert {c.kind for c in fleet[4].conditions} == {"excitement"}
    keep = Keep()
    svc = build(CloudConfig(db=store_url, mqtt=MqttConfig(url=mosquitto.url)), notifiers=[keep])
    svc.start()
    assert svc.connected.wait(10), mosquitto.log_tail()
    stop = threading.Event()
    worker = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    worker.start()
    procs = {ind.device_id: start_agent(tmp_path, ind, i, mosquitto.url) for i, ind in chosen.items()}
    finals = {}
    try:
        for dev, p in procs.items():
            out, _ = p["agent"].communicate(timeout=200)
            assert p["agent"].returncode == 0, (tmp_path / f"{dev}.log").read_text()[-2000:]
            finals[dev] = next(json.loads(x)["final"] for x in out.splitlines() if '"final"' in x)
            p["sim"].wait(10)
    finally:
        for p in procs.values():
            for proc in (p["agent"], p["sim"]):
                if proc.poll() is None:
                    proc.kill()
            for fd in p["fds"]:
                os.close(fd)
        stop.set()
        worker.join(5)
        svc.drain()
        svc.stop()
    store = svc.agg.store
    for dev, fin in finals.items():
        appended = sum(v for k, v in fin["outbox"].items() if k.startswith("appended."))
        assert fin["pending"] == 0, f"{dev}: rows left unacknowledged in the outbox"
        seqs = [r[0] for r in store.backend.execute("SELECT seq FROM records WHERE device_id = ? ORDER BY seq",
                                                     [dev]).fetchall()]
        assert seqs == list(range(1, appended + 1)), f"{dev}: stored seqs are not exactly the written ones"
        assert fin["ingest"]["bytes_rejected"] == 0 and fin["ingest"]["windows"] >= DAYS * 1440 - 1
    illness = fleet[0].conditions[0]
    onset = DEMO_START + illness.start
    bella = store.records("event", "bella")
    assert any(onset <= e["ts"] <= onset + illness.duration for e in bella), "illness produced no event"
    assert not store.records("event", "daisy"), "one-off excitement produced an event"
    decided = {d.individual_id: d.action for d in svc.agg.decisions}
    assert decided.get("bella") in ("notify", "collect_more", "uncertain"), svc.agg.decisions
    assert svc.agg.counts["rejected"] == 0
    states = {r["device_id"]: r["state"] for r in store.backend.query("SELECT device_id, state FROM devices")}
    assert states == {"collar-000": "stopped", "collar-004": "stopped"}, "clean shutdown status"
