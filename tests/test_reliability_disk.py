"""A full disk on the device: the outbox's byte bound evicts by priority (counted), never evicts
events, refuses (counted) when only events are left, and resumes when the uplink is back.
Below it, SQLite itself running out of space (PRAGMA max_page_count, or a 1 MiB tmpfs)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import MosquittoBroker
from faultproxy import FaultProxy
from test_reliability_harness import (
    CloudProcess,
    DeviceSpec,
    LoadDevice,
    check,
    fast_dir,
    print_table,
    wait_drained,
)

from shared.records import Event, RawWindow, Severity

MAX_BYTES = 64 * 1024  # the smallest bound OutboxConfig.validate allows
MIX = ("event", "raw", "summary", "raw", "summary", "raw")


def disk_full_run(broker: MosquittoBroker, *, offline_records: int = 1500,
                  online_records: int = 300) -> dict[str, Any]:
    work = fast_dir()
    proxy = FaultProxy(broker.port).start()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    dev = None
    try:
        cloud.start().wait_serving()
        spec = DeviceSpec("chaos-d0", work / "dev", proxy.url, max_bytes=MAX_BYTES, kinds=MIX)
        proxy.refuse()  # offline: everything piles up in the bounded outbox
        dev = LoadDevice(spec)
        dev.start()
        for _ in range(offline_records):
            dev.produce(1)
            dev.pump()
        used_offline = dev.agent.outbox.bytes_used
        refused_offline = dev.refused
        counters_offline = dev.agent.outbox.counters()
        # nothing left the device yet: every accepted row is pending or was evicted (counted)
        missing_offline = dev.produced - dev.pending()
        proxy.pass_through()  # uplink back: the backlog drains, new records are accepted again
        drained = wait_drained([dev], 60)
        produced_before = dev.produced
        for _ in range(online_records):  # a live device's pace, not a burst
            dev.produce(1)
            dev.pump()
            time.sleep(0.002)
        accepted_online = dev.produced - produced_before
        drained = wait_drained([dev], 60) and drained
        refused_total = dev.refused
        dev.close()
        dev = None
        cloud.stop()
        out = check([spec], work / "cloud.db")
        evicted_by_kind = {k[8:]: v for k, v in counters_offline.items() if k.startswith("evicted.")}
        row = {"scenario": "disk full (outbox bound)", **out.row(),
               "refused_offline": refused_offline, "refused_total": refused_total,
               "evicted_by_kind": evicted_by_kind, "bytes_used_offline": used_offline,
               "max_bytes": MAX_BYTES, "drained": drained, "accepted_online": accepted_online,
               "evicted_offline": missing_offline,
               "evicted_offline_counted": sum(evicted_by_kind.values())}
        row["_outcome"] = out
        return row
    finally:
        if dev is not None:
            dev.close()
        cloud.stop()
        proxy.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_disk_full_evicts_counts_and_resumes(mosquitto: MosquittoBroker) -> None:
    row = disk_full_run(mosquitto)
    out = row.pop("_outcome")
    print_table("disk full", [row])
    assert row["bytes_used_offline"] <= MAX_BYTES
    assert row["evicted_offline"] > 0, "no eviction applied"
    assert row["evicted_offline"] == row["evicted_offline_counted"], "an eviction was not counted"
    # online, a row can be evicted after it was published: counted, and stored all the same
    assert 0 < out.evicted <= out.evicted_counted
    assert set(row["evicted_by_kind"]) <= {"raw", "summary"}, "an event was evicted"
    assert row["refused_offline"] > 0, "the bound never refused: test too small to mean anything"
    assert row["accepted_online"] > 0.9 * 300, "did not resume accepting once the uplink was back"
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert row["drained"] and out.pending == 0
    assert out.stored + out.evicted == out.accepted
    assert out.events_stored > 0  # and every accepted event is stored: lost == [] above


# --------------------------------------------------------------------------- SQLite out of space


def _agent(state_dir: Path) -> Any:
    from device.agent import Agent
    from device.config import AgentConfig

    return Agent(AgentConfig(device_id="df-1", state_dir=str(state_dir)), classifier=None,
                 connect=False)


@contextlib.contextmanager
def _small_tmpfs(size: str = "1m") -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="edgeloop-tmpfs-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        d.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}); "
                    "the PRAGMA max_page_count test covers SQLITE_FULL")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
        with contextlib.suppress(OSError):
            d.rmdir()


def padded_event(ts: float) -> Event:
    return Event(ts - 60, ts, ("hr",), (1,), 0.5, Severity.WARNING, model_version="x" * 500)


def _fill(agent: Any, n: int = 100_000) -> tuple[int, BaseException | None]:
    for i in range(n):
        try:
            agent._append(padded_event(float(i)), float(i))
        except Exception as exc:
            return i, exc
    return n, None


def test_agent_survives_sqlite_full_max_page_count(tmp_path: Path) -> None:
    """SQLite out of pages with only events queued: refused and counted, never raised."""
    agent = _agent(tmp_path)
    pages = agent.outbox.db.execute("PRAGMA page_count").fetchone()[0]
    agent.outbox.db.execute(f"PRAGMA max_page_count = {pages + 3}")
    n, exc = _fill(agent, 2000)
    assert exc is None, f"after {n} appends: {type(exc).__name__}: {exc}"
    assert agent.counts["outbox_refused"] > 0


def test_agent_survives_a_full_tmpfs() -> None:
    """A real ENOSPC: the outbox on a 1 MiB tmpfs, filled with events."""
    with _small_tmpfs() as d:
        agent = _agent(d)
        try:
            n, exc = _fill(agent, 20_000)
            assert exc is None, f"after {n} appends: {type(exc).__name__}: {exc}"
            assert agent.counts["outbox_refused"] > 0
            assert agent.outbox.integrity_ok()
        finally:
            agent.outbox.close()


def test_sqlite_full_evicts_then_refuses_and_resumes(tmp_path: Path) -> None:
    """Disk full before the byte bound: raw windows are evicted for the disk (counted), then
    events are refused (counted); the database stays sound, and acks make room again."""
    agent = _agent(tmp_path)
    for i in range(8):
        agent._append(RawWindow(float(i), (1.0,), label="r" * 500), float(i))
    pages = agent.outbox.db.execute("PRAGMA page_count").fetchone()[0]
    agent.outbox.db.execute(f"PRAGMA max_page_count = {pages + 2}")
    n, exc = _fill(agent, 400)
    assert exc is None, f"after {n} appends: {type(exc).__name__}: {exc}"
    counters = agent.outbox.counters()
    evicted = sum(v for k, v in counters.items() if k.startswith("evicted.disk_full."))
    accepted = counters.get("appended.event", 0)
    print(f"\nSQLITE_FULL: {accepted} events accepted, {evicted} raw evicted for the disk, "
          f"{agent.counts['outbox_refused']} refused")
    assert evicted > 0 and set(k for k in counters if k.startswith("evicted.")) <= {
        "evicted.disk_full.raw"}, counters
    assert agent.counts["outbox_refused"] == 400 - accepted > 0
    assert agent.outbox.integrity_ok()
    events = [s for s in agent.outbox.pending_seqs()]
    assert agent.outbox.ack(events[: len(events) // 2]) == len(events) // 2
    before = agent.counts["outbox_refused"]
    n2, exc2 = _fill(agent, 3)  # room again after the acks
    assert exc2 is None and agent.counts["outbox_refused"] == before
    agent.outbox.close()


# --------------------------------------------------------------------------- the disk full at any moment


def fill_fs(d: Path, name: str = "filler") -> Path:
    """Fill the file system holding ``d`` up to the last byte (ENOSPC); returns the filler."""
    import os

    path = d / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return path


def _metrics(agent: Any, d: Path) -> dict[str, float]:
    """What the agent's Prometheus collector says about the outbox and what was not kept."""
    from device.metrics_prom import AgentCollector

    out = {}
    for fam in AgentCollector(agent, d / "outbox.db").collect():
        for s in fam.samples:
            if s.name == "edgeloop_agent_outbox_available":
                out["available"] = s.value
            elif s.name == "edgeloop_agent_not_kept_total":
                out[s.labels["what"]] = s.value
    return out


def _event_rows(agent: Any, n: int, t0: float = 0.0) -> None:
    for i in range(n):
        agent._append(padded_event(t0 + i), t0 + i)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_agent_starts_on_a_full_disk_degraded_then_opens_the_outbox(existing: bool) -> None:
    """Disk full at start (new outbox: SQLITE_FULL; an existing one: its -shm cannot grow): the
    agent starts all the same, scores, counts what it could not keep, and opens the outbox once
    space returns; the saved engine state of an existing outbox is restored then."""
    with _small_tmpfs() as d:
        if existing:
            agent = _agent(d)
            _event_rows(agent, 5)
            agent.save_state()
            agent.outbox.close()
        filler = fill_fs(d)
        agent = _agent(d)
        try:
            assert not agent.outbox.available
            _event_rows(agent, 10, 100.0)
            assert agent.counts["outbox_unavailable"] == 10
            agent.save_state()  # nowhere to save it: counted, not raised
            assert agent.report()["ingest"]["outbox_unavailable"] == 10
            assert _metrics(agent, d) == {"available": 0.0, "outbox_unavailable": 10.0, "state_unsaved": 1.0}
            agent.outbox_retry_s = 0.0
            agent.pump()  # still full: stays degraded
            assert not agent.outbox.available
            filler.unlink()
            agent.pump()  # space again: the outbox opens
            assert agent.outbox.available
            assert agent.outbox.incarnation
            if existing:
                assert agent.counts["engine_restored"] == 1
            _event_rows(agent, 3, 200.0)
            assert agent.outbox.pending_count() == 3 + (5 if existing else 0)
            assert agent.counts["outbox_unavailable"] == 10
            assert agent.outbox.integrity_ok()
        finally:
            agent.outbox.close()


def test_ack_mark_published_reject_and_save_state_survive_a_full_disk() -> None:
    """Once the outbox is open the disk fills: ack, mark_published, reject, expire and save_state
    do not raise; rows acked meanwhile are not sent again, and the deletes land once space returns."""
    with _small_tmpfs() as d:
        agent = _agent(d)
        ob = agent.outbox
        try:
            _event_rows(agent, 20)
            ob.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next write needs new space
            reserve = d / "outbox.db-reserve"
            assert reserve.stat().st_size == ob.reserve_bytes
            reserve.unlink()  # past the reserve: what was given up for the disk is gone too
            filler = fill_fs(d)
            seqs = ob.pending_seqs()
            ob.mark_published(seqs[:10])
            assert ob.ack(seqs[:5]) == 5
            ob.reject([(seqs[5], "refused by the cloud")])
            ob.expire()
            agent.save_state()
            ob.bump("x")
            due = {r.seq for r in ob.due(100)}
            assert due == set(seqs[10:]), "acked, refused or published rows are due again"
            assert agent.counts["state_unsaved"] >= 1
            filler.unlink()
            _event_rows(agent, 1, 50.0)  # the next write lands what waited
            assert ob.pending_count() == 20 - 6 + 1
            assert ob.rejected_count() == 1
            assert ob.counters().get("acked") == 5 and ob.counters().get("x") == 1
            agent.save_state()
            assert ob.integrity_ok()
        finally:
            ob.close()


def test_wal_stays_bounded_while_the_disk_fills() -> None:
    """The WAL is bounded from outbox.max_bytes (journal_size_limit, wal_autocheckpoint): a
    burst of appends and acks never grows it past the limit, and the disk fills with rows,
    not with a WAL (issue 11: a 270 KB WAL beside a 4 KB database)."""
    import os

    from device.agent import Agent
    from device.config import AgentConfig, OutboxConfig

    with _small_tmpfs("2m") as d:
        agent = Agent(AgentConfig(device_id="df-w", state_dir=str(d),
                                  outbox=OutboxConfig(max_bytes=256 * 1024)), classifier=None, connect=False)
        ob = agent.outbox
        wal = d / "outbox.db-wal"
        limit = ob.wal_limit
        assert 0 < limit <= 256 * 1024  # a WAL no larger than the rows it carries
        filler = fill_fs(d)  # leave 192 KiB: the disk fills before the outbox's byte bound
        os.truncate(filler, filler.stat().st_size - 192 * 1024)
        worst = 0
        try:
            for i in range(3000):
                agent._append(padded_event(float(i)) if i % 4 == 0 else
                              RawWindow(float(i), (1.0,), label="r" * 500), float(i))
                if i % 50 == 49:
                    ob.ack(ob.pending_seqs()[:25])
                worst = max(worst, wal.stat().st_size if wal.exists() else 0)
            stat = os.statvfs(d)
            print(f"\nWAL: worst {worst} bytes, limit {limit}; db {(d / 'outbox.db').stat().st_size}; "
                  f"free {stat.f_bavail * stat.f_frsize}")
            counters = ob.counters()
            assert any(k.startswith("evicted.disk_full.") for k in counters), f"the disk never filled: {counters}"
            # the reserve was given up once: without it the checkpoint could not grow the database by
            # the WAL's one new page, and nothing (not even the evictions) could be written
            assert counters.get("reserve_used") == 1, counters
            assert worst <= limit, f"WAL grew to {worst} bytes, over its limit {limit}"
            assert ob.integrity_ok()
        finally:
            ob.close()


def test_rolled_back_eviction_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The byte bound evicts a raw row for a new one, and the commit fails for lack of space:
    rolled back, so no ``outbox.evicted`` line, no eviction counted, the byte count unchanged."""
    import logging

    from device.agent import Agent
    from device.config import AgentConfig, OutboxConfig

    with _small_tmpfs() as d:
        agent = Agent(AgentConfig(device_id="df-e", state_dir=str(d),
                                  outbox=OutboxConfig(max_bytes=64 * 1024)), classifier=None, connect=False)
        ob = agent.outbox
        try:
            i = 0
            while not any(k.startswith("evicted.") for k in ob.counters()) and i < 1000:
                agent._append(RawWindow(float(i), (1.0,), label="r" * 500), float(i))
                i += 1
            assert agent.counts["outbox_refused"] == 0, "the disk filled before the byte bound"
            ob.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            before, used = ob.counters(), ob.bytes_used
            fill_fs(d)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="device.outbox"):
                agent._append(RawWindow(float(i), (1.0,), label="r" * 500), float(i))
            evicted_logs = [r for r in caplog.records if r.getMessage() == "outbox.evicted"]
            after = ob.counters()
            committed = {k: after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("evicted.")}
            logged = sum(getattr(r, "rows", 0) for r in evicted_logs)
            assert logged == sum(committed.values()), (evicted_logs, committed)
            real = ob.db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
            assert ob.bytes_used == real
            assert used >= real
        finally:
            ob.close()


# --------------------------------------------------------------------------- chaos: full at start


def fullstart_run(broker: MosquittoBroker, *, records: int = 300, tmpfs: str = "2m") -> dict[str, Any]:
    """The outbox on a small tmpfs that is full when the agent starts: it scores degraded, counts
    what it could not keep and opens the outbox once space returns. Later, offline, the disk fills
    again (summaries evicted for it, events refused: counted); the uplink returns while the disk is
    still full (acks and PUBACK marks cannot be written: held, not resent); then space returns.
    Everything that fitted is stored once. ``records`` per phase."""
    work = fast_dir()
    proxy = FaultProxy(broker.port).start()
    cloud = CloudProcess(work / "cloud.db", broker.url)
    dev = None
    with _small_tmpfs(tmpfs) as disk:
        try:
            cloud.start().wait_serving()
            spec = DeviceSpec("chaos-full", work / "dev", proxy.url, max_bytes=512 * 1024,
                              kinds=("event", "summary", "summary"), outbox_file=disk / "outbox.db")
            filler = fill_fs(disk)
            dev = LoadDevice(spec)
            dev.agent.outbox_retry_s = 0.2
            opened_at_start = dev.agent.outbox.available
            dev.start()
            for _ in range(records):  # the disk is full: scored, counted, not kept
                dev.produce(1)
                dev.pump()
            unavailable = dev.unavailable
            filler.unlink()  # space returns: the agent opens its outbox by itself
            deadline = time.monotonic() + 10
            while not dev.agent.outbox.available and time.monotonic() < deadline:
                dev.pump()
                time.sleep(0.05)
            opened = dev.agent.outbox.available
            _paced(dev, records)
            drained = wait_drained([dev], 60)
            proxy.refuse()  # offline, and the disk fills up while rows pile up
            proxy.cut()
            filler = fill_fs(disk)
            refused_before = dev.refused
            for _ in range(10):  # until the disk refuses (the database's free pages take rows first)
                _paced(dev, records)
                if dev.refused - refused_before >= records // 10:
                    break
            refused_full = dev.refused - refused_before
            proxy.pass_through()  # the uplink returns, the disk still full: acks are held
            held = 0
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                dev.pump()
                held = max(held, len(dev.agent.outbox._unsaved_acks))
                time.sleep(0.01)
            filler.unlink()
            _paced(dev, records)
            drained = wait_drained([dev], 60) and drained
            counters = dev.agent.outbox.counters()
            dev.close()
            dev = None
            cloud.stop()
            out = check([spec], work / "cloud.db")
            row = {"scenario": "disk full at start", **out.row(), "drained": drained,
                   "opened_at_start": opened_at_start, "opened_later": opened, "not_kept_at_start": unavailable,
                   "refused_while_full": refused_full, "acks_held_max": held,
                   "reserve_used": counters.get("reserve_used", 0)}
            row["_outcome"] = out
            return row
        finally:
            if dev is not None:
                dev.close()
            cloud.stop()
            proxy.stop()
            shutil.rmtree(work, ignore_errors=True)


def _paced(dev: LoadDevice, n: int) -> None:
    for _ in range(n):
        dev.produce(1)
        dev.pump()
        time.sleep(0.002)


def test_disk_full_at_start_then_space_returns(mosquitto: MosquittoBroker) -> None:
    row = fullstart_run(mosquitto, records=300)
    out = row.pop("_outcome")
    print_table("disk full at start", [row])
    assert not row["opened_at_start"] and row["opened_later"]
    assert row["not_kept_at_start"] == 300
    assert out.accepted >= 600, "too few records kept for the run to mean anything"
    assert row["refused_while_full"] > 0 and row["acks_held_max"] > 0, "the disk never filled mid-run"
    assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
    assert out.evicted <= out.evicted_counted
    assert row["drained"] and out.pending == 0 and out.ok


def test_cli_agent_on_a_full_disk_scores_then_stores_once_space_returns(
        mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """The real ``edgeloop agent`` with its state dir on a full tmpfs: it runs the trace to the
    end (exit 0), scores every window, says once what is wrong and what to do, and counts what it
    could not keep; run again with space, its records reach the cloud."""
    import json
    import sqlite3

    from test_reliability_harness import EDGELOOP, REPO

    trace = tmp_path / "collar.bin"
    subprocess.run([str(EDGELOOP), "sim", "--trace", str(trace), "--days", "2", "--seed", "3", "-q"],
                   check=True, capture_output=True, cwd=str(REPO), timeout=120)
    cloud = CloudProcess(tmp_path / "cloud.db", mosquitto.url)

    def agent(state: Path) -> tuple[dict[str, Any], str]:
        p = subprocess.run([str(EDGELOOP), "agent", "--source", str(trace), "--state-dir", str(state),
                            "--device-id", "cli-full", "--broker", mosquitto.url, "--exit-on-eof",
                            "--drain-timeout", "20"], capture_output=True, text=True, timeout=180, cwd=str(REPO))
        assert p.returncode == 0, p.stderr[-3000:]
        return next(json.loads(x)["final"] for x in p.stdout.splitlines() if x.startswith('{"final"')), p.stderr

    try:
        cloud.start().wait_serving()
        with _small_tmpfs() as d:
            filler = fill_fs(d)
            full, err = agent(d)
            assert full["ingest"]["windows"] == 2 * 1440, "scoring stopped on the full disk"
            assert full["ingest"]["outbox_unavailable"] > 0 and full["pending"] == 0
            assert err.count("outbox.unavailable") == 1 and "free disk space" in err
            filler.unlink()
            again, _ = agent(d)
        assert again["pending"] == 0 and again["incarnation"]
        con = sqlite3.connect(str(tmp_path / "cloud.db"))
        try:
            stored = con.execute("SELECT COUNT(*) FROM records WHERE device_id = 'cli-full'").fetchone()[0]
        finally:
            con.close()
        kept = sum(v for k, v in again["outbox"].items() if k.startswith("appended."))
        print(f"\nfull disk: {full['ingest']['windows']} windows scored, "
              f"{full['ingest']['outbox_unavailable']} records not kept; with space: {stored} of {kept} stored")
        assert stored == kept > 0
    finally:
        cloud.stop()
