"""Clock jumps of +-1 h: on the sensor's clock (frame timestamps) and on the agent's wall clock
while it syncs. Nothing is lost, outbox sequence numbers stay strictly increasing (they never
come from a clock), a backward sensor jump is flagged and the agent's timeline stays monotonic."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
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
from shared.payloads import HeartRate, Steps, encode_payload

T0 = 1_767_614_400.0  # 2026-01-05 12:00 UTC
HOUR = 3600.0


def _frames(start: float, minutes: int, seq0: int) -> bytes:
    out = bytearray()
    for i in range(minutes * 6):  # a heart rate and a step count every 10 s
        ts = start + i * 10.0
        for j, reading in enumerate((HeartRate(70.0 + (i % 5)), Steps(3, 10))):
            sensor, payload = encode_payload(reading)
            out += encode_frame(Frame(sensor=sensor, seq=seq0 + 2 * i + j,
                                      ts_ms=int(ts * 1000), payload=payload))
    return bytes(out)


def test_sensor_clock_jumps_are_flagged_and_timeline_stays_monotonic(tmp_path: Path) -> None:
    from device.agent import Agent
    from device.config import AgentConfig

    agent = Agent(AgentConfig(device_id="clk-1", individual_id="rex", state_dir=str(tmp_path)),
                  classifier=None, connect=False)
    windows: list[float] = []
    real = agent.process_window
    agent.process_window = lambda w: (windows.append(w.minute_ts), real(w))[1]  # type: ignore[method-assign]
    agent.feed(_frames(T0, 30, 0))                  # 30 min on time
    agent.feed(_frames(T0 + 30 * 60 + HOUR, 20, 10_000))  # sensor clock jumps +1 h
    agent.feed(_frames(T0 + 50 * 60, 20, 20_000))   # ... and back -1 h
    agent.finish()
    counts = agent.ingest_counts()
    print(f"\nsensor clock: windows {len(windows)}, clock_jump_back {counts.get('clock_jump_back')}, "
          f"out_of_order {counts.get('out_of_order', 0)}, frames {counts['frames_ok']}")
    assert counts["frames_ok"] == 70 * 6 * 2
    assert counts.get("clock_jump_back") == 1, counts
    assert windows == sorted(windows) and len(set(windows)) == len(windows), "timeline went back"
    assert len(windows) >= 69  # every minute was processed (a jump is not a drop)
    seqs = agent.outbox.pending_seqs()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert agent.outbox.integrity_ok()


def wall_clock_run(broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch, *,
                   per_phase: int = 600, rate: float = 300.0) -> dict[str, Any]:
    """One device syncing while the host clock jumps +1 h, then -1 h (to 1 h behind)."""
    work = fast_dir()
    offset = [0.0]
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    cloud = CloudProcess(work / "cloud.db", broker.url)
    dev = None
    try:
        cloud.start().wait_serving()
        spec = DeviceSpec("chaos-clk", work / "dev", broker.url,
                          kinds=("event", "summary", "summary"))
        dev = LoadDevice(spec)
        dev.start()
        phases = [0.0, +HOUR, -HOUR]
        for off in phases:
            offset[0] = off
            t_end = time.monotonic() + per_phase / rate
            while time.monotonic() < t_end:
                dev.produce(1)
                dev.pump()
                time.sleep(1.0 / rate)
        drained = wait_drained([dev], 60)
        report = dev.report()
        dev.close()
        dev = None
        cloud.stop()
        out = check([spec], work / "cloud.db")
        row = {"scenario": "wall clock +1h/-1h", **out.row(),
               "seq_increasing": out.seq_strictly_increasing, "drained": drained,
               "resent_connects": report["connects"]}
        row["_outcome"] = out
        return row
    finally:
        offset[0] = 0.0
        if dev is not None:
            dev.close()
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_wall_clock_jumps_during_sync(mosquitto: MosquittoBroker,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    row = wall_clock_run(mosquitto, monkeypatch)
    out = row.pop("_outcome")
    print_table("clock jumps", [row])
    assert out.accepted > 500
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert row["drained"] and out.pending == 0 and out.stored == out.accepted
    assert out.seq_strictly_increasing


def test_unacked_row_is_resent_after_clock_jumps_back() -> None:
    """A row published, then the wall clock set back an hour: due again at once, not in 1 h."""
    from device.outbox import Outbox

    ob = Outbox(None, resend_after=30.0)
    seq = ob.append("event", "rex", T0, {"x": 1})
    ob.mark_published([seq], now=T0)
    assert [r.seq for r in ob.due(now=T0 + 31)] == [seq]  # normal: due again after 30 s
    # the clock is set back one hour, 31 s later in real time:
    assert [r.seq for r in ob.due(now=T0 - HOUR + 31)] == [seq]


