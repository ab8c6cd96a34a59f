"""The store suite, run on both back ends: SQLite (a file) and PostgreSQL (a database created and
dropped per test on the local server; skipped without one unless EDGELOOP_REQUIRE_POSTGRES=1)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker
from recs import record_of
from test_aggregator import T0, batch, event_body
from test_cloud_identity import EDGELOOP, ROOT, _cloud, _events, _stop, _wait

from cloud.aggregator.clock import RecordClock
from cloud.aggregator.handler import Aggregator
from cloud.feedback import record_feedback
from cloud.quality import quality_by_model_version
from cloud.rules.notify import NotificationPolicy, get_decision
from cloud.store.backend import StoreUrlError, parse_store_url
from cloud.store.db import CloudStore, open_store
from cloud.store.schema import postgres_columns
from shared import schemas, topics

EV_TS = T0 + 3 * 86400 + 7200


@pytest.fixture
def store(any_store: CloudStore) -> CloudStore:
    return any_store


def aggregator(store: CloudStore) -> Aggregator:
    return Aggregator(store, NotificationPolicy.from_toml(None), publish=lambda t, p: None, clock=RecordClock())


def test_urls_name_the_back_end(tmp_path: Path) -> None:
    assert parse_store_url(str(tmp_path / "a.db")).path == str(tmp_path / "a.db")
    assert parse_store_url(f"sqlite:///{tmp_path}/a.db").path == f"{tmp_path}/a.db"
    assert parse_store_url("sqlite:///rel.db").path == "rel.db"
    assert parse_store_url(None).path is None and parse_store_url("sqlite://").dialect == "sqlite"
    assert parse_store_url("postgresql://u@h:5432/d").dialect == "postgresql"
    with pytest.raises(StoreUrlError, match="unknown store URL scheme"):
        parse_store_url("mysql://u@h/d")


def test_a_record_is_stored_once(store: CloudStore) -> None:
    r1 = record_of(1, "summary", T0, "bella", {"day": "2026-01-05"})
    r2 = record_of(2, "event", EV_TS, "bella", event_body())
    b = schemas.UplinkBatch("collar-000", (r1, r2), "a" * 32)
    first, again = store.store_batch(b), store.store_batch(b)
    assert [r.seq for r in first.new] == [1, 2] and first.duplicates == 0
    assert again.new == () and again.duplicates == 2
    assert store.count() == 2 and store.count("event") == 1
    rec = store.record("collar-000", "a" * 32, 2)
    assert rec is not None and rec["body"]["severity"] == "critical"
    assert [r["seq"] for r in store.records(individual_id="bella")] == [1, 2]


def test_incarnations_device_state_and_rejections(store: CloudStore) -> None:
    assert store.note_incarnation("d1", "a" * 32, 1) == 0
    assert store.note_incarnation("d1", "a" * 32, 1) is None
    assert store.note_incarnation("d1", "b" * 32, 1) == 1
    store.set_device_state("d1", "online", 5.0)
    store.set_device_state("d1", "offline", 6.0)
    assert store.records_repo.b.query("SELECT state, status_ts FROM devices") == [
        {"state": "offline", "status_ts": 6.0}]
    for i in range(3):
        store.reject(f"topic/{i}", "bad", 10)
    assert [r["source"] for r in store.records_repo.rejections()] == ["topic/2", "topic/1", "topic/0"]


def test_events_are_decided_once_with_their_incident(store: CloudStore) -> None:
    agg = aggregator(store)
    ev = record_of(2, "event", EV_TS, "bella", event_body())
    for _ in range(3):
        agg.handle_message(topics.uplink("collar-000"), batch("collar-000", ev))
    assert agg.counts["decision.notify"] == 1 and agg.counts["records_duplicate"] == 2
    d = get_decision(store, "collar-000:2")
    assert d is not None and d.action == "notify" and d.incident_id == "inc:collar-000:2"
    ev2 = record_of(3, "event", EV_TS + 600, "bella", event_body(severity="warning"))
    agg.handle_message(topics.uplink("collar-000"), batch("collar-000", ev2))
    d2 = get_decision(store, "collar-000:3")
    assert d2 is not None and (d2.action, d2.rule) == ("suppress", "duplicate"), "the rules read the history"
    agg.tick()
    assert agg.counts["tick_failed"] == 0


def test_two_aggregators_on_one_store_decide_each_event_once(store_url: str) -> None:
    """Two aggregators (two connections) given the same batches at once for one individual: each
    event stored and decided once, one incident, nothing lost."""
    stores = [open_store(store_url), open_store(store_url)]
    aggs = [aggregator(s) for s in stores]
    payloads = [batch("collar-0", record_of(100 + i, "event", EV_TS + i, "bella", event_body()))
                for i in range(30)]
    errors: list[BaseException] = []

    def run(agg: Aggregator) -> None:
        try:
            for p in payloads:
                agg.handle_message(topics.uplink(schemas.decode_batch(p).batch.device_id), p)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in aggs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors
        assert sum(a.counts["rejected"] for a in aggs) == 0, [a.counts for a in aggs]
        decided = sum(v for a in aggs for k, v in a.counts.items() if k.startswith("decision."))
        assert decided == 30 and sum(a.counts["records_new"] for a in aggs) == 30
        assert stores[0].count("event") == 30
        rows = stores[0].records_repo.b.query("SELECT COUNT(*) AS n FROM alerts")
        assert rows[0]["n"] == 30
        open_incidents = stores[0].records_repo.b.query(
            "SELECT COUNT(*) AS n FROM incidents WHERE closed_at IS NULL")
        assert open_incidents[0]["n"] == 1
    finally:
        for s in stores:
            s.close()


def test_feedback_and_quality_read_the_same_store(store: CloudStore) -> None:
    agg = aggregator(store)
    ev = record_of(2, "event", EV_TS, "bella", event_body())
    agg.handle_message(topics.uplink("collar-000"), batch("collar-000", ev))
    fb = schemas.Feedback("collar-000:2", "bella", "confirm", EV_TS + 60)
    res = record_feedback(store, fb)
    assert res.feedback_id and not res.duplicate and res.state == "confirmed"
    assert record_feedback(store, fb).duplicate
    rows = quality_by_model_version(store)
    assert rows and rows[0]["model_version"] == "m1"


def test_the_schema_is_the_same_on_both_back_ends(store: CloudStore) -> None:
    """Every table and column the migration sets define exists in the store as it opens."""
    want = postgres_columns()
    for table, (cols, _) in want.items():
        got = store.records_repo.b.query(f'SELECT * FROM "{table}" LIMIT 0')
        assert got == []
        if store.dialect == "postgresql":
            have = {r["column_name"] for r in store.records_repo.b.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table])}
        else:
            have = {c.name for c in store.db[table].columns}
        assert set(cols) <= have, (table, set(cols) - have)
    again = open_store(store.url.target if store.dialect == "postgresql" else str(store.path))
    again.close()  # opening an up-to-date store changes nothing and does not fail


@pytest.mark.mosquitto
@pytest.mark.timeout(180)
def test_two_cloud_processes_on_one_store_url_end_to_end(store_url: str, tmp_path: Path,
                                                          mosquitto: MosquittoBroker) -> None:
    """``edgeloop cloud --db URL`` twice on one shared subscription and a real mosquitto: every
    event stored and decided once; ``alerts``, ``quality``, ``feedback`` and ``release status``
    read the same URL."""
    procs = [_cloud(tmp_path, n, mosquitto.url, store_url) for n in ("a", "b")]
    try:
        assert _wait(lambda: all(any(e["event"] == "cloud.connected" for e in _events(lg)) for _, lg in procs)), \
            [(p.poll(), lg.read_text()[-1500:]) for p, lg in procs]
        time.sleep(0.5)
        batches = []
        for n in range(20):
            for i in range(5):
                d = f"collar-{i:03d}"
                recs = (record_of(2 * n + 1, "summary", T0 + n * 60, f"ind-{i}", {"day": f"d{n}"}),
                        record_of(2 * n + 2, "event", EV_TS + n * 600, f"ind-{i}", event_body()))
                batches.append((topics.uplink(d), schemas.encode(schemas.UplinkBatch(d, recs, "c" * 32))))
        with Collector.connect(mosquitto, "acks") as acks:
            acks.subscribe(f"{topics.ROOT}/dev/+/ack")
            acks.publish_many(batches)
            acks.publish_many(batches[:10])  # redelivered: acked again, never decided again
            assert acks.wait_for(len(batches) + 10, timeout=90), f"{len(acks.messages)} acks"
    finally:
        rcs = [_stop(p) for p, _ in procs]
    assert rcs == [0, 0], [lg.read_text()[-2000:] for _, lg in procs]
    store = open_store(store_url)
    try:
        assert store.count() == 200 and store.count("event") == 100
        n = store.records_repo.b.query("SELECT COUNT(*) AS n, COUNT(DISTINCT alert_id) AS d FROM alerts")[0]
        assert (n["n"], n["d"]) == (100, 100), "every event decided exactly once"
    finally:
        store.close()
    alerts = _cli("alerts", "--db", store_url, "--individual", "ind-0")
    assert alerts.returncode == 0 and f"collar-000:{'c' * 32}:2" in alerts.stdout, alerts.stderr
    fb = _cli("feedback", "--db", store_url, f"collar-000:{'c' * 32}:2", "confirm", "--individual", "ind-0")
    assert fb.returncode == 0, fb.stderr
    quality = _cli("quality", "--db", store_url)
    assert quality.returncode == 0 and "m1" in quality.stdout, quality.stderr
    status = _cli("release", "status", "--db", store_url)
    assert status.returncode == 0, status.stderr


def test_a_store_url_the_cli_cannot_open_exits_2() -> None:
    bad = _cli("alerts", "--db", "mysql://u@h/d", "--individual", "x")
    assert bad.returncode == 2 and "unknown store URL scheme" in bad.stderr, bad.stderr
    down = _cli("quality", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert down.returncode == 2 and "cannot open PostgreSQL store" in down.stderr, down.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGELOOP, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_periodic_work_runs_once_across_aggregators(store_url: str) -> None:
    """The lease row: one aggregator of those sharing a store runs the periodic work; when it
    stops renewing (dies) another takes over after the lease's ttl, at once after a clean stop."""
    clock = [1_000_000.0]
    stores = [open_store(store_url), open_store(store_url)]
    a, b = (Aggregator(s, NotificationPolicy.from_toml(None), publish=lambda t, p: None,
                       wall=lambda: clock[0], lease_ttl=15.0) for s in stores)
    try:
        for _ in range(3):
            a.tick()
            b.tick()
            clock[0] += 1.0
        assert (a.counts["periodic_runs"], b.counts["periodic_runs"]) == (3, 0)
        assert b.counts["periodic_elsewhere"] == 3 and a.counts["tick_failed"] == b.counts["tick_failed"] == 0
        clock[0] += 16.0  # a died: its lease runs out
        b.tick()
        a.tick()
        assert (a.counts["periodic_runs"], b.counts["periodic_runs"]) == (3, 1)
        b.release_leases()  # b stops cleanly: a takes over at its next tick
        a.tick()
        assert a.counts["periodic_runs"] == 4
    finally:
        for s in stores:
            s.close()


def test_aggregators_opening_a_fresh_store_at_once_all_succeed(store_url: str) -> None:
    """Several processes' first open of a new store (the schema created once, the others wait)."""
    code = ("import sys, time; from cloud.store.db import open_store; from cloud.store.schema import postgres_ddl; "
            "postgres_ddl(); time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "  # imported: start together
            "s = open_store(sys.argv[1]); print(s.count()); s.close()")
    at = str(time.time() + 4.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url, at], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-300:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["0"] * 4


def test_regression_cases_cannot_be_deleted_on_either_back_end(store: CloudStore) -> None:
    """Inherited regression cases are kept forever: SQLite's trigger, and its PostgreSQL form."""
    store.backend.execute("INSERT INTO regression_cases (source_key, created) VALUES (?, ?)", ["case-1", 1.0])
    with pytest.raises(Exception, match="kept forever"):
        store.backend.execute("DELETE FROM regression_cases WHERE source_key = ?", ["case-1"])
    assert store.backend.execute("SELECT COUNT(*) FROM regression_cases").fetchone()[0] == 1
