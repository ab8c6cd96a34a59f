"""Issue 11 on the device, through the real ``edgeloop agent`` process, real SQLite and a private
mosquitto with the cloud aggregator:

- item 4: one frame dated +1 year, +1 hour or -1 day is a counted glitch; the records are the
  same as from the stream without it (none shifted). A real jump (the clock set back a day for
  good) is followed after several frames agree, and the offset survives a restart.
- item 9: SIGTERM with the cloud unreachable stops within 2 s and keeps the outbox; a second
  SIGINT cuts a drain short.
- item 10: an agent reading a trace remembers how far it got: run again on the same trace, it
  sends nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import MosquittoBroker, free_port
from cloudsvc import serving

from cloud.aggregator.service import AggregatorService
from cloud.config import CloudConfig
from cloud.store import bindings
from cloud.store.db import CloudStore
from firmware_sim.collar import CollarSim
from firmware_sim.scenario import DEMO_START, default_fleet
from shared.frames import Frame, encode_frame
from shared.mqtt import MqttConfig
from shared.payloads import HeartRate, encode_payload

REPO = Path(__file__).resolve().parent.parent
EDGELOOP = REPO / ".venv" / "bin" / "edgeloop"
DAY = 86400.0
GLITCHES = ((0.3, 365 * DAY), (0.55, 3600.0), (0.8, -DAY))  # (where in the stream, offset s)


def collar_chunks(days: float, start: float = DEMO_START, shift_after: float | None = None,
                  shift: float = 0.0) -> list[tuple[float, bytes]]:
    """A quiet collar's minutes (daisy: no sensor faults of her own); with ``shift_after``, the
    device clock is set ``shift`` seconds off from that point on (a real clock change)."""
    ind = default_fleet(5, days)[4]
    if shift_after is not None:
        ind = dataclasses.replace(ind, conditions=tuple(c for c in ind.conditions if c.kind != "clock_jump"))
    sim = CollarSim(ind, start, days)
    out = []
    for t, chunk in sim.chunks():
        if shift_after is not None and t >= shift_after:
            chunk = _reclock(chunk, shift)
        out.append((t, chunk))
    return out


def _reclock(chunk: bytes, shift: float) -> bytes:
    from shared.frames import FrameDecoder

    return b"".join(encode_frame(dataclasses.replace(f, ts_ms=f.ts_ms + int(shift * 1000)))
                    for f in FrameDecoder().feed(chunk))


def glitch_frame(ts: float, seq: int) -> bytes:
    sensor, payload = encode_payload(HeartRate(88.0))
    return encode_frame(Frame(sensor=sensor, seq=seq, ts_ms=int(ts * 1000), payload=payload))


def write(path: Path, chunks: list[tuple[float, bytes]], extra: dict[int, bytes] | None = None,
          end: bool = True) -> Path:
    with open(path, "wb") as f:
        for i, (_, data) in enumerate(chunks):
            if extra and i in extra:
                f.write(extra[i])
            f.write(data)
        if end:
            sensor, payload = encode_payload(__import__("shared.payloads", fromlist=["DeviceInfo"]).DeviceInfo(
                {"event": "end_of_stream"}))
            f.write(encode_frame(Frame(sensor=sensor, seq=0, ts_ms=0, payload=payload)))
    return path


def agent_cmd(trace: Path, state: Path, url: str, device_id: str, *extra: str) -> list[str]:
    return [str(EDGELOOP), "agent", "--source", str(trace), "--state-dir", str(state), "--device-id", device_id,
            "--broker", url, *extra]


def run_agent(trace: Path, state: Path, url: str, device_id: str, drain: float = 30.0) -> dict[str, Any]:
    p = subprocess.run(agent_cmd(trace, state, url, device_id, "--exit-on-eof", "--drain-timeout", str(drain)),
                       capture_output=True, text=True, timeout=180, cwd=str(REPO))
    assert p.returncode == 0, p.stderr[-3000:]
    return next(json.loads(x)["final"] for x in p.stdout.splitlines() if x.startswith('{"final"'))


@pytest.fixture
def cloud(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[AggregatorService]:
    with serving(CloudConfig(db=str(tmp_path / "cloud.db"), mqtt=MqttConfig(url=mosquitto.url)), mosquitto) as svc:
        yield svc


def records(svc: AggregatorService, device_id: str) -> list[dict[str, Any]]:
    return [dict(r, body=json.loads(r["body"])) for r in svc.agg.store.db.query(
        "SELECT * FROM records WHERE device_id = ? ORDER BY seq", [device_id])]


def fingerprint(rows: list[dict[str, Any]]) -> Counter[tuple[str, float, str]]:
    """What a shift would change: each record's kind, time and (summaries) day."""
    return Counter((r["kind"], r["ts"], r["body"].get("day", "")) for r in rows if r["kind"] != "report")


# --------------------------------------------------------------------------- item 4


@pytest.mark.timeout(300)
def test_one_bad_timestamp_is_a_counted_glitch_and_shifts_nothing(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: AggregatorService) -> None:
    chunks = collar_chunks(4.0)
    clean = write(tmp_path / "clean.bin", chunks)
    at = {int(f * len(chunks)): glitch_frame(DEMO_START + chunks[int(f * len(chunks))][0] + off, 0xFFFF0000 + k)
          for k, (f, off) in enumerate(GLITCHES)}
    glitched = write(tmp_path / "glitched.bin", chunks, at)
    ref = run_agent(clean, tmp_path / "ref", mosquitto.url, "collar-ref")
    # two devices replay one individual's trace: an operator binds the second to her as well
    operator = CloudStore(tmp_path / "cloud.db")
    bindings.BindingRepository(operator.backend).bind("collar-g", records(cloud, "collar-ref")[0]["individual_id"])
    operator.close()
    got = run_agent(glitched, tmp_path / "dev", mosquitto.url, "collar-g")
    assert ref["pending"] == 0 and got["pending"] == 0
    want, have = fingerprint(records(cloud, "collar-ref")), fingerprint(records(cloud, "collar-g"))
    assert sum(want.values()) >= 4, "a summary per day at least"
    shifted = sum((have - want).values())
    assert shifted == 0, f"{shifted} records shifted by a glitch: {sorted(have - want)[:3]}"
    assert have == want
    assert got["ingest"]["clock_glitch"] == 3
    assert not got["ingest"].get("clock_jump_back") and not got["ingest"].get("gap_or_clock_jump_forward")


@pytest.mark.timeout(300)
def test_a_real_clock_change_is_followed_and_the_offset_survives_a_restart(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: AggregatorService) -> None:
    # the device clock is set back a day after 1.5 days, for good; the agent stops at 2 days and
    # is started again on the rest of the stream (a reboot: the clock is still a day behind)
    chunks = collar_chunks(4.0, shift_after=1.5 * DAY, shift=-DAY)
    first = [c for c in chunks if c[0] < 2 * DAY]
    rest = [c for c in chunks if c[0] >= 2 * DAY]
    a = run_agent(write(tmp_path / "a.bin", first), tmp_path / "dev", mosquitto.url, "collar-c")
    b = run_agent(write(tmp_path / "b.bin", rest), tmp_path / "dev", mosquitto.url, "collar-c")
    assert a["ingest"]["clock_jump_back"] == 1 and a["pending"] == 0 and b["pending"] == 0
    assert not b["ingest"].get("clock_jump_back"), "after the restart the timeline carries on"
    rows = [r for r in records(cloud, "collar-c") if r["kind"] == "summary"]
    minutes: Counter[str] = Counter()
    for r in rows:  # a day may be summarised in two parts (before and after the restart), never twice
        minutes[r["body"]["day"]] += r["body"]["minutes"]
    assert max(minutes.values()) <= 1440, f"minutes counted twice: {dict(minutes)}"
    assert max(minutes) == "2026-01-08", "the timeline carries on: 4 days of data end on the 4th day"
    ts = [r["ts"] for r in rows]
    assert ts == sorted(ts), "the timeline never went back"


# --------------------------------------------------------------------------- item 9


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=f, text=True, cwd=str(REPO),
                                start_new_session=True)


def _wait_windows(p: subprocess.Popen[str], n: int, timeout: float = 60.0) -> None:
    """Read the agent's progress lines until it scored ``n`` windows."""
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        if '"windows"' in line and json.loads(line).get("windows", 0) >= n:
            return
    raise AssertionError("the agent did not get going")


@pytest.mark.timeout(120)
def test_sigterm_with_the_cloud_unreachable_stops_within_2_s_and_keeps_the_outbox(tmp_path: Path) -> None:
    trace = write(tmp_path / "t.bin", collar_chunks(2.0), end=False)  # waits at the end, as a live port
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens: the cloud is unreachable
    p = _spawn(agent_cmd(trace, tmp_path / "dev", dead, "collar-t", "--progress"), tmp_path / "agent.log")
    try:
        _wait_windows(p, 2 * 1440 - 10)  # the whole trace scored (its last minute stays open)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=90)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, (tmp_path / "agent.log").read_text()[-2000:]
    final = next(json.loads(x)["final"] for x in out.splitlines() if x.startswith('{"final"'))
    print(f"\nSIGTERM to exit with the cloud unreachable: {took:.2f} s; {final['pending']} rows kept")
    assert took < 2.0, f"took {took:.1f} s to stop"
    assert final["pending"] >= 2, "the outbox keeps what was not sent"
    with sqlite3.connect(tmp_path / "dev" / "outbox.db") as con:
        assert con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == final["pending"]
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.timeout(120)
def test_a_second_sigint_cuts_the_drain_short(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """The broker is up but no cloud acknowledges: the first SIGINT starts a drain that would wait
    for acks (up to its idle limit); the second ends it at once, the rows stay in the outbox."""
    trace = write(tmp_path / "t.bin", collar_chunks(2.0), end=False)
    p = _spawn(agent_cmd(trace, tmp_path / "dev", mosquitto.url, "collar-s", "--progress", "--drain-timeout", "60"),
               tmp_path / "agent.log")
    try:
        _wait_windows(p, 2 * 1440 - 10)
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        t1 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=90)
        took = time.monotonic() - t1
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, (tmp_path / "agent.log").read_text()[-2000:]
    final = next(json.loads(x)["final"] for x in out.splitlines() if x.startswith('{"final"'))
    print(f"\nsecond SIGINT to exit: {took:.2f} s; {final['pending']} rows kept")
    assert took < 1.5, f"took {took:.1f} s after the second SIGINT"
    assert final["pending"] >= 2


# --------------------------------------------------------------------------- item 10


@pytest.mark.timeout(300)
def test_an_agent_restarted_on_its_trace_sends_nothing_twice(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: AggregatorService) -> None:
    trace = write(tmp_path / "t.bin", collar_chunks(3.0))
    state = tmp_path / "dev"
    first = run_agent(trace, state, mosquitto.url, "collar-r")
    again = run_agent(trace, state, mosquitto.url, "collar-r")
    rows = records(cloud, "collar-r")
    dup = {k: n for k, n in fingerprint(rows).items() if n > 1}
    assert dup == {}, f"{sum(dup.values())} records sent twice, e.g. {sorted(dup)[:3]}"
    assert sum(v for k, v in again["outbox"].items() if k.startswith("appended.")) == \
        sum(v for k, v in first["outbox"].items() if k.startswith("appended.")), "nothing new appended"
    assert again["ingest"].get("windows", 0) == 0, "it read on from where it stopped: the end"


@pytest.mark.timeout(300)
def test_an_agent_killed_on_its_trace_resumes_without_duplicates(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: AggregatorService) -> None:
    trace = write(tmp_path / "t.bin", collar_chunks(4.0))
    state = tmp_path / "dev"
    p = _spawn(agent_cmd(trace, state, mosquitto.url, "collar-k", "--progress"), tmp_path / "agent.log")
    try:
        _wait_windows(p, 2 * 1440 + 100)  # well into the third day
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        assert p.stdout is not None
        p.stdout.close()
    final = run_agent(trace, state, mosquitto.url, "collar-k")
    assert final["pending"] == 0
    rows = records(cloud, "collar-k")
    dup = {k: n for k, n in fingerprint(rows).items() if n > 1}
    assert dup == {}, f"{sum(dup.values())} records sent twice after the kill, e.g. {sorted(dup)[:3]}"
    days = sorted(r["body"]["day"] for r in rows if r["kind"] == "summary")
    assert len(days) == len(set(days)) >= 4
