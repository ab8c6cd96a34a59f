"""Field faults as chaos scenarios (issue 11), each against a private mosquitto and the real
``edgeloop cloud`` process, checked record by record (tests/test_reliability_harness.py):

- ``reset``: the device's state is wiped between two runs (outbox deleted: a new SD card); the
  restarted agent is a new incarnation whose sequence numbers start at 1 again: every record of
  both runs is stored once, none taken for a duplicate of the first run;
- ``poison``: a device-info frame names the individual "Bella Smith": refused at the edge and
  counted; a row queued under that name (as an older agent did) is set aside on the device; the
  good rows around it are all stored;
- ``glitch``: single sensor frames dated +1 year, +1 hour and -1 day among minutes of good ones:
  counted as glitches, no record shifted (every window's record at its true minute).

The full disk at start is ``fullstart`` in tests/test_reliability_disk.py. scripts/chaos runs
them all (``--size ci`` is what these tests run).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from brokers import MosquittoBroker
from test_reliability_harness import (
    CloudProcess,
    DeviceSpec,
    LoadDevice,
    check,
    fast_dir,
    print_table,
    wait_drained,
)

from shared.frames import Frame, encode_frame
from shared.payloads import DeviceInfo, HeartRate, Reading, Steps, encode_payload

T0 = 1_767_614_400.0  # 2026-01-05 12:00 UTC
DAY = 86400.0


def _frame(ts: float, reading: Reading, seq: int) -> bytes:
    sensor, payload = encode_payload(reading)
    return encode_frame(Frame(sensor=sensor, seq=seq & 0xFFFF, ts_ms=int(ts * 1000), payload=payload))


def _produce_paced(dev: LoadDevice, n: int, rate: float = 400.0) -> None:
    for _ in range(n):
        dev.produce(1)
        dev.pump()
        time.sleep(1.0 / rate)


def _incarnations(cloud_db: Path, device_id: str) -> int:
    con = sqlite3.connect(str(cloud_db))
    try:
        return int(con.execute("SELECT COUNT(*) FROM incarnations WHERE device_id = ?", [device_id]).fetchone()[0])
    finally:
        con.close()


# --------------------------------------------------------------------------- reset


def reset_run(broker: MosquittoBroker, *, records: int = 300) -> dict[str, Any]:
    """Two lives of one device: ``records`` each, the state wiped in between."""
    work = fast_dir()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    devs: list[LoadDevice] = []
    try:
        cloud.start().wait_serving()
        spec = DeviceSpec("chaos-reset", work / "dev", broker.url, kinds=("event", "summary", "summary"))
        first = LoadDevice(spec)
        devs.append(first)
        first.start()
        _produce_paced(first, records)
        drained = wait_drained([first], 60)
        inc1 = first.agent.outbox.incarnation
        first.close()
        devs.remove(first)
        # the wipe: the device loses its state dir (kept aside here only for the checker)
        wiped = DeviceSpec(spec.device_id, work / "dev-wiped", broker.url)
        spec.state_dir.rename(wiped.state_dir)
        second = LoadDevice(spec)
        devs.append(second)
        second.start()
        inc2 = second.agent.outbox.incarnation
        _produce_paced(second, records)
        drained = wait_drained([second], 60) and drained
        second.close()
        devs.remove(second)
        cloud.stop()
        out = check([wiped, spec], work / "cloud.db")
        row = {"scenario": "state reset (new incarnation)", **out.row(), "drained": drained,
               "incarnations": _incarnations(work / "cloud.db", spec.device_id),
               "new_incarnation": inc1 != inc2 and bool(inc2),
               "logged": cloud.log_path.read_text(errors="replace").count("aggregator.new_incarnation")}
        row["_outcome"] = out
        return row
    finally:
        for d in devs:
            d.close()
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_state_reset_mid_run_stores_both_lives_once(mosquitto: MosquittoBroker) -> None:
    row = reset_run(mosquitto, records=300)
    out = row.pop("_outcome")
    print_table("state reset", [row])
    assert row["new_incarnation"] and row["incarnations"] == 2
    assert row["logged"] >= 1, "the cloud did not log the new incarnation"
    assert out.accepted == 600 and out.stored == 600, "records of the second life taken for duplicates"
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert row["drained"] and out.pending == 0 and out.ok


# --------------------------------------------------------------------------- poison


def poison_run(broker: MosquittoBroker, *, records: int = 300) -> dict[str, Any]:
    """A bad individual id from the sensor, and a row queued under it, among good rows."""
    work = fast_dir()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    dev = None
    try:
        cloud.start().wait_serving()
        spec = DeviceSpec("chaos-poison", work / "dev", broker.url, kinds=("event", "summary"), individual_id="")
        dev = LoadDevice(spec)
        dev.start()
        dev.agent.feed(_frame(T0, DeviceInfo({"individual_id": "Bella Smith"}), 1))  # refused at the edge
        _produce_paced(dev, records // 2)  # filed under the device id meanwhile
        # a row an older agent queued under the bad name: the device's check refuses it
        poisoned = dev.agent.outbox.append("event", "Bella Smith", T0, dict(_event_body()))
        dev._log.write(f'{{"seq": {poisoned}, "kind": "event"}}\n')
        dev.agent.feed(_frame(T0 + 1, DeviceInfo({"individual_id": "bella"}), 2))  # a valid name later
        _produce_paced(dev, records - records // 2)
        drained = wait_drained([dev], 60)
        counts, rejected = dict(dev.agent.counts), dev.agent.outbox.rejected_count()
        dev.close()
        dev = None
        cloud.stop()
        out = check([spec], work / "cloud.db")
        con = sqlite3.connect(str(work / "cloud.db"))
        try:
            filed = dict(con.execute("SELECT individual_id, COUNT(*) FROM records GROUP BY individual_id").fetchall())
        finally:
            con.close()
        row = {"scenario": "poisoned individual id", **out.row(), "drained": drained,
               "id_rejected": counts.get("individual_id_rejected", 0), "rejected_on_device": rejected,
               "filed": filed}
        row["_outcome"] = out
        return row
    finally:
        if dev is not None:
            dev.close()
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


def _event_body() -> dict[str, Any]:
    from test_reliability_harness import event_body

    return event_body(0, T0)


def test_poisoned_id_is_set_aside_and_the_good_rows_flow(mosquitto: MosquittoBroker) -> None:
    row = poison_run(mosquitto, records=300)
    out = row.pop("_outcome")
    print_table("poisoned id", [row])
    assert row["id_rejected"] == 1 and row["rejected_on_device"] == 1 == out.set_aside
    assert out.stored == out.accepted - 1 == 300, "good rows stuck behind the bad one"
    assert set(row["filed"]) == {"chaos-poison", "bella"}, row["filed"]
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert row["drained"] and out.pending == 0 and out.ok


# --------------------------------------------------------------------------- glitch


def glitch_run(broker: MosquittoBroker, *, minutes: int = 120) -> dict[str, Any]:
    """``minutes`` of heart rate and steps every 10 s, every window kept as a raw record; three
    single frames dated +1 year, +1 hour and -1 day in the middle."""
    work = fast_dir()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    dev = None
    glitches = {minutes // 4: 365 * DAY, minutes // 2: 3600.0, 3 * minutes // 4: -DAY}
    try:
        cloud.start().wait_serving()
        spec = DeviceSpec("chaos-glitch", work / "dev", broker.url)
        dev = LoadDevice(spec)
        dev.start()
        dev.agent.raw_until = float("inf")  # every window becomes a record at its minute
        seq = 0
        for m in range(minutes):
            chunk = bytearray()
            for k in range(6):
                ts = T0 + m * 60.0 + k * 10.0
                if k == 3 and m in glitches:
                    chunk += _frame(ts + glitches[m], HeartRate(140.0), seq)
                    seq += 1
                for reading in (HeartRate(70.0 + (m + k) % 5), Steps(3, 10)):
                    chunk += _frame(ts, reading, seq)
                    seq += 1
            dev.agent.feed(bytes(chunk))
            dev.pump()
        dev.agent.finish()
        drained = wait_drained([dev], 60)
        counts = dev.agent.ingest_counts()
        dev.close()
        dev = None
        cloud.stop()
        out = check([spec], work / "cloud.db")
        con = sqlite3.connect(str(work / "cloud.db"))
        try:
            raw_ts = [r[0] for r in con.execute("SELECT ts FROM records WHERE kind = 'raw' ORDER BY ts")]
        finally:
            con.close()
        expected = [T0 + m * 60.0 for m in range(minutes)]
        row = {"scenario": "timestamp glitches", **out.row(), "drained": drained,
               "glitches": counts.get("clock_glitch", 0), "raw_windows": len(raw_ts),
               "shifted": sum(1 for t in raw_ts if t not in set(expected)),
               "missing_minutes": len(set(expected) - set(raw_ts))}
        row["_outcome"] = out
        return row
    finally:
        if dev is not None:
            dev.close()
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_timestamp_glitches_shift_nothing(mosquitto: MosquittoBroker) -> None:
    row = glitch_run(mosquitto, minutes=120)
    out = row.pop("_outcome")
    print_table("timestamp glitches", [row])
    assert row["glitches"] == 3
    assert row["shifted"] == 0 and row["missing_minutes"] == 0 and row["raw_windows"] == 120
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert row["drained"] and out.pending == 0 and out.ok
