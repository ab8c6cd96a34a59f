"""Chaos harness shared by tests/test_reliability_*.py and scripts/chaos, and tests of its checker.

- ``LoadDevice``: the real device ``Agent`` (SQLite outbox, paho ``Uplink``, ``Agent.pump``) fed
  synthetic records instead of sensor frames, so thousands of accepted events flow through the
  real store-and-forward path in seconds. Every accepted record is logged (seq, kind) as JSON
  lines after ``Outbox.append`` returned; AUTOINCREMENT's ``sqlite_sequence`` is the ground
  truth for what was committed (a kill between commit and log line is still accounted for).
- ``CloudProcess``: the real ``edgeloop cloud`` CLI as a subprocess (SIGKILL-able).
- ``check(...)``: compares what the devices accepted with what the cloud stored, by record
  identity (device, incarnation, seq): lost, duplicated, unexpected, evicted (counted by the
  outbox), set aside (refused for good, kept in the outbox's ``rejected`` table), still pending,
  events without a notification decision, and ``PRAGMA integrity_check`` of every database.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EDGELOOP = REPO / ".venv" / "bin" / "edgeloop"
KINDS_EVICTABLE = ("raw", "summary", "report")


def fast_dir(prefix: str = "edgeloop-chaos-") -> Path:
    """A scratch dir on tmpfs when there is one: SQLite fsyncs cost ~10 ms on disk, ~0 on tmpfs.
    SIGKILL of a process never loses page-cache data, so process-kill tests stay meaningful."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def event_body(i: int, ts: float) -> dict[str, Any]:
    """A deviation-event body the cloud's notification rules can read."""
    return {"start_ts": ts - 3600, "ts": ts, "metrics": ["hr_rest", "activity"],
            "directions": [1, -1], "score": round(0.5 + (i % 50) / 100, 2), "severity": "warning",
            "kind": "sustained", "baseline": [60.0, 1.0], "observed": [75.0, 0.5],
            "model_version": "chaos", "detector_version": f"chaos-{i}"}


def padded_body(kind: str, i: int, ts: float) -> dict[str, Any]:
    """A valid record body of ``kind`` (shared.records) of about 250 bytes."""
    if kind == "event":
        return event_body(i, ts)
    if kind == "summary":
        return {"day": f"chaos-{i}", "agent_version": "x" * 200}
    if kind == "raw":
        return {"minute_ts": ts, "metrics": [float(i)], "label": "x" * 200}
    return {"command_id": f"chaos-{i}", "ok": True, "detail": "x" * 200}


# --------------------------------------------------------------------------- device


@dataclass
class DeviceSpec:
    device_id: str
    state_dir: Path
    broker_url: str
    keepalive: int = 5
    resend_after: float = 2.0
    batch_size: int = 50
    max_bytes: int = 64 * 1024 * 1024
    kinds: tuple[str, ...] = ("event",)  # cycled through for each record
    reconnect_max: float = 2.0
    individual_id: str | None = None  # configured individual; None: ind-<device_id>, "": learnt from frames
    outbox_file: Path | None = None  # the outbox elsewhere (a small tmpfs); None: in state_dir

    @property
    def outbox_path(self) -> Path:
        return self.outbox_file or self.state_dir / "outbox.db"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "accepted.jsonl"


class LoadDevice:
    """A real Agent whose input is ``produce()`` instead of frames (see the module docstring)."""

    def __init__(self, spec: DeviceSpec, connect: bool = True) -> None:
        from device.agent import Agent
        from device.config import AgentConfig, OutboxConfig
        from shared.mqtt import MqttConfig

        self.spec = spec
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        ind = f"ind-{spec.device_id}" if spec.individual_id is None else spec.individual_id
        cfg = AgentConfig(
            device_id=spec.device_id, individual_id=ind,
            state_dir=str(spec.state_dir), drain_timeout=0.0,
            mqtt=MqttConfig(url=spec.broker_url, keepalive=spec.keepalive, reconnect_min=0.5,
                            reconnect_max=spec.reconnect_max),
            outbox=OutboxConfig(path=str(spec.outbox_file or ""), max_bytes=spec.max_bytes,
                                resend_after=spec.resend_after, batch_size=spec.batch_size),
        )
        self.agent = Agent(cfg, classifier=None, connect=connect)
        self._log = open(spec.log_path, "a")  # noqa: SIM115 - closed in close()
        self.produced = 0
        self.refused = 0
        self.unavailable = 0  # refused because the outbox could not be opened (disk full at start)
        self.disconnects: list[float] = []  # monotonic times the uplink went down
        self.connects: list[float] = []
        self._was_connected = False
        self._n = self._count_logged()

    def _count_logged(self) -> int:
        try:
            with open(self.spec.log_path) as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def produce(self, n: int = 1) -> None:
        """Append n records (the device 'accepts' them); each is logged once committed."""
        from device.outbox import BufferFullError, OutboxUnavailableError

        kinds = self.spec.kinds
        for _ in range(n):
            i = self._n
            kind = kinds[i % len(kinds)]
            ts = 1_767_571_200.0 + i * 60.0
            body = padded_body(kind, i, ts)
            try:
                seq = self.agent.outbox.append(kind, self.agent.individual_id or self.spec.device_id, ts, body)
            except OutboxUnavailableError:
                self.unavailable += 1
                self.agent.counts["outbox_unavailable"] += 1
                continue
            except BufferFullError:
                self.refused += 1
                self.agent.counts["outbox_refused"] += 1
                continue
            finally:
                self._n += 1
            self._log.write(json.dumps({"seq": seq, "kind": kind}) + "\n")
            self._log.flush()
            self.produced += 1

    def pump(self) -> None:
        self.agent.pump()
        up = self.agent.uplink
        if up is not None and up.connected != self._was_connected:
            (self.connects if up.connected else self.disconnects).append(time.monotonic())
            self._was_connected = up.connected

    def start(self) -> None:
        if self.agent.uplink is not None:
            self.agent.uplink.start()

    def pending(self) -> int:
        return self.agent.outbox.pending_count()

    def run(self, n: int, rate: float, stop: threading.Event | None = None,
            drain_timeout: float = 60.0, release: threading.Event | None = None
            ) -> dict[str, Any]:
        """Produce n records at `rate`/s while pumping, then pump until drained (or timeout);
        with `release`, keep pumping (staying online) until it is set, then drain."""
        stop = stop or threading.Event()
        self.start()
        t0 = time.monotonic()
        done = 0
        while done < n and not stop.is_set():
            due = min(n, int((time.monotonic() - t0) * rate) + 1)
            if due > done:
                self.produce(due - done)
                done = due
            self.pump()
            time.sleep(0.002)
        while release is not None and not release.is_set() and not stop.is_set():
            self.pump()
            time.sleep(0.005)
        deadline = time.monotonic() + drain_timeout
        while self.pending() and time.monotonic() < deadline and not stop.is_set():
            self.pump()
            time.sleep(0.005)
        return self.report()

    def report(self) -> dict[str, Any]:
        return {"device_id": self.spec.device_id, "produced": self.produced,
                "refused": self.refused, "pending": self.pending(),
                "outbox": self.agent.outbox.counters(), "counts": dict(self.agent.counts),
                "connects": self.agent.uplink.connects if self.agent.uplink else 0,
                "disconnects": len(self.disconnects)}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.agent.uplink is not None:
                self.agent.uplink.stop(timeout=1.0)
        self._log.close()
        self.agent.outbox.close()


def device_thread(spec: DeviceSpec, n: int, rate: float, results: list[dict[str, Any]],
                  drain_timeout: float = 60.0, stop: threading.Event | None = None,
                  holder: list[LoadDevice] | None = None,
                  release: threading.Event | None = None, **kw: Any) -> threading.Thread:
    """Start a thread that builds a LoadDevice (SQLite objects stay on their own thread), runs
    it, closes it and appends its report to `results` (and the device itself to `holder`, so
    other threads can read its connect/disconnect times)."""

    def body() -> None:
        dev = LoadDevice(spec, **kw)
        if holder is not None:
            holder.append(dev)
        try:
            results.append(dev.run(n, rate, stop, drain_timeout, release))
        finally:
            dev.close()

    t = threading.Thread(target=body, name=f"device-{spec.device_id}", daemon=True)
    t.start()
    return t


def device_main(spec: DeviceSpec, n: int, rate: float, drain_timeout: float) -> None:
    """Entry point of a device process (a multiprocessing target)."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    dev = LoadDevice(spec)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    report = dev.run(n, rate, stop, drain_timeout)
    dev.close()
    print(json.dumps({"final": report}), flush=True)


def forkserver_context() -> Any:
    """A multiprocessing context whose children fork from a server that already imported the
    agent (numpy, numba, paho): a device process starts in milliseconds, so it can be killed
    and restarted many times."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["device.agent", "paho.mqtt.client", "test_reliability_harness"])
    return ctx


def integrity(path: Path) -> str:
    """PRAGMA integrity_check of a SQLite file (opened read-write so the WAL is recovered)."""
    con = sqlite3.connect(str(path), timeout=10)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


# --------------------------------------------------------------------------- cloud


class CloudProcess:
    """``edgeloop cloud`` as a subprocess: start, SIGKILL, restart; stdout/stderr to a log."""

    def __init__(self, db: Path, broker_url: str, instance: str = "cloud-1",
                 shared: bool = True, reconnect_max: float = 2.0) -> None:
        self.db, self.broker_url, self.instance, self.shared = db, broker_url, instance, shared
        self.reconnect_max = reconnect_max
        self.log_path = db.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> CloudProcess:
        cfg = self.db.with_suffix(".toml")
        cfg.write_text(f'instance = "{self.instance}"\n[mqtt]\nreconnect_max = {self.reconnect_max}\n')
        args = [str(EDGELOOP), "cloud", "--config", str(cfg), "--broker", self.broker_url,
                "--db", str(self.db)]
        if not self.shared:
            args.append("--no-shared")
        with open(self.log_path, "ab") as log:
            log.write(b"--- start\n")  # wait_serving() looks for "serving" after the last one
            log.flush()
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=str(REPO))
        self.starts += 1
        _CLOUDS.add(self)
        return self

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        marker = "serving"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"edgeloop cloud exited {self.proc.returncode}:\n{self.log_tail()}")
            if marker in self.log_path.read_text(errors="replace").split("--- start")[-1]:
                return
            time.sleep(0.05)
        raise AssertionError(f"edgeloop cloud not serving after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self.kills += 1
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.start()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


_CLOUDS: weakref.WeakSet[CloudProcess] = weakref.WeakSet()


@atexit.register
def _kill_clouds() -> None:  # pragma: no cover - safety net (they run in their own session)
    for c in list(_CLOUDS):
        with contextlib.suppress(Exception):
            c.kill()


# --------------------------------------------------------------------------- checker


@dataclass
class Outcome:
    """What the checker measured; ``ok`` means nothing accepted went missing or doubled."""

    accepted: int = 0  # committed outbox rows (AUTOINCREMENT high-water marks, summed)
    stored: int = 0  # distinct (device_id, seq) rows in the cloud
    lost: list[tuple[str, int]] = field(default_factory=list)
    duplicates: int = 0  # rows per (device_id, seq) beyond the first, after dedupe
    unexpected: list[tuple[str, int]] = field(default_factory=list)
    evicted: int = 0  # accepted, gone from the outbox, not stored, and of an evictable kind
    evicted_counted: int = 0  # the outboxes' counters (also rows evicted after being published)
    set_aside: int = 0  # refused for good (by the device's check or the cloud's), kept in ``rejected``
    pending: int = 0  # still in an outbox (not yet acked)
    events_stored: int = 0
    events_without_decision: int = 0
    decisions_per_event_max: int = 0
    integrity: dict[str, str] = field(default_factory=dict)
    seq_strictly_increasing: bool = True

    @property
    def ok(self) -> bool:
        return (not self.lost and not self.duplicates and not self.unexpected
                and self.evicted <= self.evicted_counted
                and self.events_without_decision == 0 and self.decisions_per_event_max <= 1
                and all(v == "ok" for v in self.integrity.values())
                and self.seq_strictly_increasing)

    def row(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "stored": self.stored, "lost": len(self.lost),
                "dup": self.duplicates, "unexpected": len(self.unexpected),
                "evicted": self.evicted, "evicted_counted": self.evicted_counted,
                "set_aside": self.set_aside, "pending": self.pending, "events": self.events_stored,
                "no_decision": self.events_without_decision,
                "integrity": "ok" if all(v == "ok" for v in self.integrity.values()) else "BAD"}


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), timeout=10)


def check(devices: Iterable[DeviceSpec], cloud_db: Path) -> Outcome:
    out = Outcome()
    con = _ro(cloud_db)
    try:
        out.integrity[str(cloud_db)] = str(con.execute("PRAGMA integrity_check").fetchone()[0])
        stored: dict[tuple[str, str], set[int]] = {}  # (device, incarnation) -> seqs
        kinds: dict[tuple[str, str, int], str] = {}
        for dev, inc, seq, kind in con.execute("SELECT device_id, incarnation, seq, kind FROM records"):
            stored.setdefault((dev, inc), set()).add(seq)
            kinds[(dev, inc, seq)] = kind
        out.stored = sum(len(s) for s in stored.values())
        out.duplicates = sum(n - 1 for (n,) in con.execute(
            "SELECT COUNT(*) FROM records GROUP BY device_id, incarnation, seq HAVING COUNT(*) > 1"))
        out.events_stored = sum(1 for k in kinds.values() if k == "event")
        has_alerts = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alerts'").fetchone()
        if has_alerts:
            cols = {r[1] for r in con.execute("PRAGMA table_info(alerts)")}
            inc_col = "incarnation" if "incarnation" in cols else "''"
            per = {(d, i, s): n for d, i, s, n in con.execute(
                f"SELECT device_id, {inc_col}, seq, COUNT(*) FROM alerts GROUP BY device_id, {inc_col}, seq")}
            out.events_without_decision = sum(
                1 for key, k in kinds.items() if k == "event" and key not in per)
            out.decisions_per_event_max = max(per.values(), default=0)
    finally:
        con.close()
    known: set[tuple[str, str]] = set()
    for spec in devices:
        ob = _ro(spec.outbox_path)
        try:
            out.integrity[str(spec.outbox_path)] = str(
                ob.execute("PRAGMA integrity_check").fetchone()[0])
            row = ob.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            high = int(row[0]) if row else 0
            pending = {s for (s,) in ob.execute("SELECT seq FROM outbox")}
            counters = {n: v for n, v in ob.execute("SELECT name, value FROM counters")}
            inc_row = ob.execute("SELECT value FROM kv WHERE key = 'incarnation'").fetchone()
            has_rejected = ob.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='rejected'").fetchone()
            rejected = {s for (s,) in ob.execute("SELECT seq FROM rejected")} if has_rejected else set()
        finally:
            ob.close()
        key = (spec.device_id, bytes(inc_row[0]).decode() if inc_row else "")
        known.add(key)
        logged: dict[int, str] = {}
        last = 0
        with contextlib.suppress(OSError), open(spec.log_path) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    d = json.loads(line)
                    if d["seq"] <= last:
                        out.seq_strictly_increasing = False
                    last = d["seq"]
                    logged[d["seq"]] = d["kind"]
        got = stored.get(key, set())
        out.accepted += high
        out.pending += len(pending)
        out.evicted_counted += sum(v for k, v in counters.items() if k.startswith("evicted."))
        for seq in range(1, high + 1):
            if seq in got or seq in pending:
                continue
            if seq in rejected:
                out.set_aside += 1
                continue
            if logged.get(seq) in KINDS_EVICTABLE:
                out.evicted += 1
            else:
                out.lost.append((spec.device_id, seq))
        out.unexpected += [(spec.device_id, s) for s in got if s > high]
    out.unexpected += [(d, s) for (d, i), seqs in stored.items() if (d, i) not in known for s in seqs]
    return out


def wait_drained(devices: Iterable[Any], timeout: float, pump: bool = True) -> bool:
    """Pump LoadDevices until every outbox is empty; False on timeout."""
    devs = list(devices)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pump:
            for d in devs:
                d.pump()
        if all(d.pending() == 0 for d in devs):
            return True
        time.sleep(0.01)
    return False


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A plain fixed-width table on stdout (scripts/chaos, and pytest -s)."""
    if not rows:
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(width[c]) for c in cols))
    sys.stdout.flush()


# --------------------------------------------------------------------------- tests of the checker


def _fake_outbox(path: Path, rows: list[tuple[int, str]], high: int,
                 counters: dict[str, int] | None = None, incarnation: str = "",
                 rejected: tuple[int, ...] = ()) -> None:
    from device.outbox import Outbox

    ob = Outbox(path)
    ob.put("incarnation", incarnation.encode())  # the fake cloud's rows carry it ("" by default)
    for _ in range(high):
        ob.append("event", "i", 0.0, {})
    ob.reject([(s, "refused") for s in rejected])
    keep = {s for s, _ in rows}
    with ob.db.conn:
        ob.db.execute(f"DELETE FROM outbox WHERE seq NOT IN ({','.join(map(str, keep)) or '0'})")
        for name, v in (counters or {}).items():
            ob._bump(name, v)
    ob.close()


def _fake_cloud(path: Path, rows: list[tuple[str, int, str]], incarnation: str = "") -> None:
    from cloud.store.db import CloudStore

    st = CloudStore(path)
    with st.db.conn:
        for d, s, k in rows:
            st.db.execute("INSERT INTO records (device_id, incarnation, seq, kind, ts, individual_id, body, "
                          "received_at) VALUES (?, ?, ?, ?, 0, 'i', '{}', 0)", [d, incarnation, s, k])
    st.close()


def test_checker_keys_records_by_incarnation_and_counts_set_aside(tmp_path: Path) -> None:
    """A device reset: two outboxes of one device, seqs 1..3 each, under two incarnations. The
    second life's records are not covered by the first's (its seq 3 is lost), and a row the
    device set aside (rejected table) is neither lost nor stored."""
    old = DeviceSpec("dev-r", tmp_path / "old", "mqtt://x:1")
    new = DeviceSpec("dev-r", tmp_path / "new", "mqtt://x:1")
    for spec, inc, rejected in ((old, "aaaa", (2,)), (new, "bbbb", ())):
        spec.state_dir.mkdir()
        _fake_outbox(spec.outbox_path, [], high=3, incarnation=inc, rejected=rejected)
    _fake_cloud(tmp_path / "c.db", [("dev-r", 1, "summary"), ("dev-r", 3, "summary")], incarnation="aaaa")
    _fake_cloud(tmp_path / "c.db", [("dev-r", 1, "summary"), ("dev-r", 2, "summary")], incarnation="bbbb")
    o = check([old, new], tmp_path / "c.db")
    assert o.accepted == 6 and o.stored == 4 and o.duplicates == 0
    assert o.set_aside == 1 and o.lost == [("dev-r", 3)] and o.unexpected == []


def test_checker_counts_lost_unexpected_evicted_pending(tmp_path: Path) -> None:
    spec = DeviceSpec("dev-a", tmp_path / "a", "mqtt://x:1")
    spec.state_dir.mkdir()
    # accepted 1..6: 1,2 stored; 3 pending; 4 evicted raw (counted); 5 lost event; 6 lost unknown
    _fake_outbox(spec.outbox_path, [(3, "event")], high=6, counters={"evicted.raw": 1})
    spec.log_path.write_text("".join(json.dumps({"seq": s, "kind": k}) + "\n" for s, k in
                                     [(1, "event"), (2, "event"), (3, "event"), (4, "raw"),
                                      (5, "event")]))
    _fake_cloud(tmp_path / "c.db", [("dev-a", 1, "event"), ("dev-a", 2, "event"),
                                    ("dev-a", 9, "event"), ("dev-zz", 1, "event")])
    o = check([spec], tmp_path / "c.db")
    assert o.accepted == 6 and o.stored == 4 and o.pending == 1
    assert o.lost == [("dev-a", 5), ("dev-a", 6)]
    assert sorted(o.unexpected) == [("dev-a", 9), ("dev-zz", 1)]
    assert o.evicted == 1 == o.evicted_counted
    assert o.events_without_decision == 0 or o.events_stored == 4
    assert not o.ok


def test_checker_clean_run_is_ok(tmp_path: Path) -> None:
    spec = DeviceSpec("dev-b", tmp_path / "b", "mqtt://x:1")
    spec.state_dir.mkdir()
    _fake_outbox(spec.outbox_path, [], high=3)
    spec.log_path.write_text("".join(json.dumps({"seq": s, "kind": "summary"}) + "\n"
                                     for s in (1, 2, 3)))
    _fake_cloud(tmp_path / "c.db", [("dev-b", s, "summary") for s in (1, 2, 3)])
    o = check([spec], tmp_path / "c.db")
    assert o.ok and o.row()["lost"] == 0 and o.accepted == o.stored == 3


def test_checker_flags_non_increasing_seq_log(tmp_path: Path) -> None:
    spec = DeviceSpec("dev-c", tmp_path / "c", "mqtt://x:1")
    spec.state_dir.mkdir()
    _fake_outbox(spec.outbox_path, [], high=2)
    spec.log_path.write_text('{"seq": 2, "kind": "event"}\n{"seq": 1, "kind": "event"}\n')
    _fake_cloud(tmp_path / "c.db", [("dev-c", 1, "event"), ("dev-c", 2, "event")])
    assert not check([spec], tmp_path / "c.db").seq_strictly_increasing


def random_kill_times(rng: random.Random, n: int, start: float, end: float,
                      min_gap: float = 1.0) -> list[float]:
    """n sorted instants in [start, end), at least `min_gap` s apart when the span allows."""
    span = end - start
    gap = min(min_gap, span / (2 * n))
    base = sorted(rng.uniform(start, end - gap * n) for _ in range(n))
    return [t + i * gap for i, t in enumerate(base)]


@pytest.mark.parametrize("n", [3, 5, 20])
def test_random_kill_times_are_spread(n: int) -> None:
    ts = random_kill_times(random.Random(n), n, 1.0, 30.0)
    assert len(ts) == n and ts == sorted(ts) and ts[0] >= 1.0 and ts[-1] < 30.0
