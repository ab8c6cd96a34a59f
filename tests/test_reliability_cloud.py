"""The cloud aggregator SIGKILLed and restarted during a load: nothing lost, nothing counted twice.

The aggregator stores a batch idempotently (device id + seq) and acks it afterwards, so a kill
before the ack only causes a redelivery (a counted duplicate), never a loss. "Double-counted" is
measured on what the cloud derives from records: at most one notification decision per event.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import time
from typing import Any

import pytest
from brokers import MosquittoBroker
from recs import record_of
from test_reliability_harness import (
    CloudProcess,
    DeviceSpec,
    check,
    device_thread,
    event_body,
    fast_dir,
    print_table,
    random_kill_times,
)

MIX = ("event", "summary", "summary")


def cloud_kill_run(broker: MosquittoBroker, *, devices: int = 2, records: int = 6000,
                   kills: int = 3, rate: float = 600.0, seed: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    work = fast_dir()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    try:
        cloud.start().wait_serving()
        specs = [DeviceSpec(f"chaos-c{i}", work / f"dev{i}", broker.url, kinds=MIX)
                 for i in range(devices)]
        results: list[dict[str, Any]] = []
        t0 = time.monotonic()
        per = records // devices
        threads = [device_thread(s, per, rate / devices, results, drain_timeout=120.0)
                   for s in specs]
        for at in random_kill_times(rng, kills, 1.0, per / (rate / devices), min_gap=2.0):
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            cloud.kill()
            time.sleep(rng.uniform(0.2, 1.0))
            cloud.start()
            cloud.wait_serving()
        for t in threads:
            t.join(200)
        took = time.monotonic() - t0
        cloud.stop()
        out = check(specs, work / "cloud.db")
        row = {"scenario": "cloud SIGKILL", "kills": cloud.kills, **out.row(),
               "max_decisions_per_event": out.decisions_per_event_max, "seconds": round(took, 1)}
        row["_outcome"] = out
        return row
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_cloud_sigkilled_3_times(mosquitto: MosquittoBroker) -> None:
    row = cloud_kill_run(mosquitto, kills=3)
    out = row.pop("_outcome")
    print_table("cloud kills", [row])
    assert row["kills"] == 3
    assert out.accepted == 6000
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert out.pending == 0 and out.stored == 6000
    assert out.evicted == 0
    assert out.decisions_per_event_max == 1, "an event was decided (counted) twice"
    assert out.events_without_decision == 0, "a stored event never got its decision"


class _Crash(Exception):
    """Stands in for a failure between storing a batch and deciding on its events
    (sqlite 'database is locked', a bug in a rule, or the process dying there)."""


def test_event_decided_after_crash_between_store_and_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored, then the process fails before deciding: the redelivery gets the decision made."""
    import cloud.aggregator.handler as handler
    from cloud.rules.notify import NotificationPolicy
    from cloud.store.db import CloudStore
    from shared import schemas, topics

    store = CloudStore()
    agg = handler.Aggregator(store, NotificationPolicy.from_toml(), publish=lambda t, p: None)
    rec = record_of(1, "event", 1_767_614_400.0, "rex", event_body(1, 1_767_614_400.0))
    payload = schemas.encode(schemas.UplinkBatch("dev-1", (rec,)))
    real = handler.decide_batch  # what the handler calls between storing and deciding
    calls = {"n": 0}

    def crash_once(*a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise _Crash("died after the store committed")
        return real(*a, **kw)

    monkeypatch.setattr(handler, "decide_batch", crash_once)
    agg.handle_message(topics.uplink("dev-1"), payload)  # crash: not acked
    agg.handle_message(topics.uplink("dev-1"), payload)  # the device's resend
    n = store.db.execute("SELECT COUNT(*) FROM alerts WHERE device_id='dev-1' AND seq=1").fetchone()[0]
    assert n == 1, "the stored event never got a notification decision"


@pytest.mark.slow
def test_cloud_store_survives_sigkill_mid_write(tmp_path: Any) -> None:
    """A writer process SIGKILLed while storing batches leaves a database that passes
    integrity_check and holds whole batches only."""
    import subprocess
    import sys

    db = tmp_path / "cloud.db"
    code = (
        "from cloud.store.db import CloudStore; from shared.schemas import *\n"
        "from shared.records import DailySummary\n"
        f"s = CloudStore({str(db)!r}); i = 0\n"
        "while True:\n"
        "    s.store_batch(UplinkBatch('d', tuple(Record(i*10+k+1, 'summary', 0.0, 'x', DailySummary(str(k)))"
        " for k in range(10)))); i += 1\n"
    )
    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    p = subprocess.Popen([sys.executable, "-c", code], cwd=str(repo))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it mid-write: once batches are being stored
        try:
            with contextlib.closing(sqlite3.connect(str(db), timeout=5)) as c:
                if c.execute("SELECT COUNT(*) FROM records").fetchone()[0] >= 30:
                    break
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.05)
    time.sleep(0.2)
    p.kill()
    p.wait(10)
    con = sqlite3.connect(str(db))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        assert n > 0 and n % 10 == 0, f"{n} rows: a partial batch was committed"
    finally:
        con.close()


def test_store_batch_is_atomic() -> None:
    """A batch that fails half-way leaves nothing behind (db.atomic(), not `with db.conn:`)."""
    from cloud.store.db import CloudStore
    from shared.records import CommandReport, Record
    from shared.schemas import UplinkBatch

    store = CloudStore()
    ok = record_of(1, "summary", 0.0, "x", {"day": "2026-01-05"})
    unserialisable = Record(2, "report", 0.0, "x", CommandReport("c", True, data={"k": {1, 2}}))  # json.dumps fails
    with pytest.raises(TypeError):
        store.store_batch(UplinkBatch("d", (ok, unserialisable)))
    assert store.count() == 0, "half of a failed batch stayed committed"

