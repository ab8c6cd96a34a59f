"""The device agent SIGKILLed at random points (power cut): the outbox stays intact and nothing
it had accepted is lost.

Each cycle forks a device process (real Agent: outbox append, pump, PUBACK, cloud ack, delete)
from a preloaded fork server, lets it run a random 0.05-0.8 s (so kills land in startup,
migrations, appends, publishes and ack deletes), SIGKILLs it and runs PRAGMA integrity_check.
A last process drains the outbox. CI size: 50 kills (scripts/chaos: 200).
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
    check,
    device_main,
    fast_dir,
    forkserver_context,
    integrity,
    print_table,
)


def agent_kill_run(broker: MosquittoBroker, *, kills: int = 50, rate: float = 400.0,
                   seed: int = 2) -> dict[str, Any]:
    rng = random.Random(seed)
    work = fast_dir()
    ctx = forkserver_context()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    try:
        cloud.start().wait_serving()
        spec = DeviceSpec("chaos-a0", work / "dev", broker.url,
                          kinds=("event", "summary", "summary", "summary"))
        bad: list[tuple[int, str]] = []
        killed_alive = 0
        t0 = time.monotonic()
        for i in range(kills):
            p = ctx.Process(target=device_main, args=(spec, 10**9, rate, 0.0), daemon=True)
            p.start()
            time.sleep(rng.uniform(0.05, 0.8))
            killed_alive += p.is_alive()
            p.kill()
            p.join(10)
            if spec.outbox_path.exists():
                res = integrity(spec.outbox_path)
                if res != "ok":
                    bad.append((i, res))
        # power back for good: a last process drains the backlog
        p = ctx.Process(target=device_main, args=(spec, 0, rate, 90.0), daemon=True)
        p.start()
        p.join(120)
        took = time.monotonic() - t0
        cloud.stop()
        out = check([spec], work / "cloud.db")
        row = {"scenario": "agent SIGKILL", "kills": kills, **out.row(),
               "integrity_failures": len(bad), "killed_while_running": killed_alive,
               "seconds": round(took, 1)}
        row["_outcome"] = out
        row["_bad"] = bad
        return row
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_agent_sigkilled_50_times(mosquitto: MosquittoBroker) -> None:
    row = agent_kill_run(mosquitto, kills=50)
    out, bad = row.pop("_outcome"), row.pop("_bad")
    print_table("agent kills", [row])
    assert bad == [], f"integrity_check failed after kills: {bad}"
    assert row["killed_while_running"] == 50
    assert out.accepted > 1000, "too few records accepted for the kills to mean anything"
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert out.evicted == 0 == out.evicted_counted
    assert out.pending == 0 and out.stored == out.accepted
    assert out.events_without_decision == 0
