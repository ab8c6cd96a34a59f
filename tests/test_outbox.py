"""Outbox: durable across reopen, nothing deleted before the cloud's ack, bounded with priorities."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from device.outbox import BufferFullError, Outbox


def test_rows_survive_reopen_and_seq_never_reused(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    o = Outbox(p)
    s1 = o.append("event", "rex", 1.0, {"a": 1})
    s2 = o.append("summary", "rex", 2.0, {"b": 2})
    o.ack([s2])
    o.close()
    o = Outbox(p)
    assert o.pending_seqs() == [s1]
    assert o.due()[0].body == {"a": 1}
    s3 = o.append("event", "rex", 3.0, {})
    assert s3 > s2, "AUTOINCREMENT: a deleted seq is never handed out again"
    assert o.integrity_ok()


def test_published_is_not_acked() -> None:
    o = Outbox(None, resend_after=30.0)
    s = o.append("event", "rex", 1.0, {})
    o.mark_published([s], now=100.0)
    assert o.pending_seqs() == [s], "PUBACK must not delete: only the cloud's ack does"
    assert o.due(now=110.0) == []
    assert [r.seq for r in o.due(now=131.0)] == [s], "unacked rows are re-sent after resend_after"
    o.unmark_published()
    assert [r.seq for r in o.due(now=101.0)] == [s]
    assert o.ack([s]) == 1 and o.pending_seqs() == []
    assert o.ack([s]) == 0, "a duplicate ack is harmless"


def test_eviction_order_raw_then_summaries_never_events() -> None:
    o = Outbox(None, max_bytes=64 * 1024)
    pad = "x" * 3000
    evs = [o.append("event", "r", i, {"p": pad}) for i in range(5)]
    for i in range(6):
        o.append("summary", "r", i, {"p": pad})
    for i in range(6):
        o.append("raw", "r", i, {"p": pad})
    for i in range(15):
        o.append("event", "r", 100 + i, {"p": pad})
    c = o.counters()
    assert c.get("evicted.raw", 0) == 6 and c.get("evicted.summary", 0) >= 1
    assert set(evs) <= set(o.pending_seqs()), "events are never evicted"
    assert o.bytes_used <= 64 * 1024
    with pytest.raises(BufferFullError, match="outbox full"):
        for i in range(40):
            o.append("event", "r", 200 + i, {"p": pad})
    assert o.counters()["refused.full.event"] == 1
    assert set(evs) <= set(o.pending_seqs())


def test_an_outbox_has_one_incarnation_for_life_and_a_new_one_when_reset(tmp_path: Path) -> None:
    o = Outbox(tmp_path / "o.db")
    inc = o.incarnation
    assert len(inc) == 32 and int(inc, 16) >= 0 and inc == inc.lower()
    o.append("event", "rex", 1.0, {})
    o.close()
    assert Outbox(tmp_path / "o.db").incarnation == inc, "kept across restarts"
    (tmp_path / "o.db").unlink()  # the reset: new storage, seqs from 1 again
    again = Outbox(tmp_path / "o.db")
    assert again.incarnation != inc and again.append("event", "rex", 1.0, {}) == 1


def test_an_outbox_from_before_incarnations_keeps_the_old_identity_while_rows_are_queued(tmp_path: Path) -> None:
    """Rows queued by an agent that predates incarnations may be stored at the cloud as
    (device, "", seq) already: resending them under a new incarnation would store them twice."""
    import sqlite3

    from sqlite_utils import Database

    from device.outbox import m001_outbox

    for queued, legacy in ((True, True), (False, False)):
        path = tmp_path / f"old-{queued}.db"
        db = Database(sqlite3.connect(path))
        m001_outbox(db)
        db.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT, "
                   "applied_at TEXT)")
        db.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES "
                   "('edgeloop.device.outbox', 'm001_outbox', '2026-01-01')")
        if queued:
            db.execute("INSERT INTO outbox (kind, priority, individual_id, ts, body, size, created) "
                       "VALUES ('event', 0, 'rex', 1.0, '{}', 66, 1.0)")
        db.conn.commit()
        db.close()
        o = Outbox(path)
        assert (o.incarnation == "") is legacy
        assert o.pending_count() == int(queued)


def test_rows_refused_by_the_cloud_are_moved_aside_kept_and_bounded() -> None:
    o = Outbox(None, max_bytes=64 * 1024)  # the rejected table keeps up to 128 KiB (one row cap)
    a = o.append("summary", "Bella Smith", 1.0, {"p": "x" * 40_000})
    b = o.append("event", "rex", 2.0, {})
    moved = o.reject([(a, "individual id 'Bella Smith' is invalid"), (999, "gone already")], now=5.0)
    assert [(r.seq, r.kind, r.individual_id) for r in moved] == [(a, "summary", "Bella Smith")]
    assert o.pending_seqs() == [b] and [r.seq for r in o.due()] == [b], "never sent again"
    assert o.counters()["rejected.summary"] == 1 and o.rejected_count() == 1
    assert o.bytes_used == o.db.execute("SELECT SUM(size) FROM outbox").fetchone()[0]
    assert "Bella Smith" in o.rejected_rows()[0].reason
    for i in range(4):  # 4 x 40 KB more: the oldest refused rows go, counted
        s = o.append("summary", "Bella Smith", 3.0 + i, {"p": "x" * 40_000})
        o.reject([(s, "bad")], now=6.0 + i)
    assert o.rejected_count() == 3 and o.counters()["rejected_dropped"] == 2
    assert o.rejected_rows(1)[0].rejected_at == 9.0


def test_raw_ttl_expiry_is_counted() -> None:
    o = Outbox(None, raw_ttl=10.0)
    o.append("raw", "r", 1.0, {})
    o.append("event", "r", 1.0, {})
    import time

    assert o.expire(now=time.time() + 11) == 1
    assert o.counters()["expired.raw"] == 1 and len(o.pending_seqs()) == 1


class OutboxMachine(RuleBasedStateMachine):
    """enqueue / publish / ack / reopen / crash: nothing acked is resent, nothing unacked is lost."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.path = Path(self.dir) / "o.db"
        self.o = Outbox(self.path)
        self.unacked: set[int] = set()
        self.acked: set[int] = set()
        self.now = 1000.0

    @rule(kind=st.sampled_from(["event", "summary", "report"]))
    def enqueue(self, kind: str) -> None:
        s = self.o.append(kind, "rex", self.now, {"k": kind})
        assert s not in self.unacked | self.acked
        self.unacked.add(s)

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def publish(self, data: st.DataObject) -> None:
        due = [r.seq for r in self.o.due(10_000, now=self.now)]
        if due:
            self.o.mark_published(data.draw(st.lists(st.sampled_from(due), unique=True)), now=self.now)

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.unacked)), unique=True))
        self.o.ack(chosen)
        self.unacked -= set(chosen)
        self.acked |= set(chosen)

    @rule()
    def reopen(self) -> None:
        self.o.close()
        self.o = Outbox(self.path)

    @rule()
    def crash(self) -> None:
        # drop the connection without closing (as SIGKILL would); WAL recovers on open
        self.o = Outbox(self.path)

    @rule()
    def time_passes(self) -> None:
        self.now += 31.0

    @invariant()
    def nothing_lost_nothing_resent(self) -> None:
        pending = set(self.o.pending_seqs())
        assert pending == self.unacked
        due = {r.seq for r in self.o.due(10_000, now=self.now + 31.0)}
        assert due == self.unacked and not (due & self.acked)


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


def test_batches_stay_under_the_message_cap() -> None:
    """Raw windows are large: a batch is bounded in bytes as well as in rows, and one row that
    could never fit a message is refused at append time instead of blocking the queue forever."""
    from device.outbox import MAX_ROW_BYTES
    from device.syncer import MAX_BATCH_BYTES, fit_batch
    from shared import schemas
    from shared.codec import from_json
    from shared.records import Record

    o = Outbox(None)
    accel = [[0.123, -0.456, 0.987]] * 100
    for i in range(60):
        o.append("raw", "rex", float(i), {"minute_ts": float(i), "metrics": [1.0], "accel": accel})
    rows = o.due(200)
    batches = []
    while rows:
        b = fit_batch(rows, 50, MAX_BATCH_BYTES)
        batches.append(b)
        rows = rows[len(b):]
    assert len(batches) > 1
    for b in batches:
        payload = schemas.encode(schemas.UplinkBatch("collar-000", tuple(
            from_json(Record, {"seq": r.seq, "kind": r.kind, "ts": r.ts, "individual_id": r.individual_id,
                               "body": r.body}, "record") for r in b)))
        assert len(payload) <= schemas.MAX_MESSAGE_BYTES
        schemas.decode(payload)
    with pytest.raises(BufferFullError, match="could never be sent"):
        o.append("raw", "rex", 0.0, {"blob": "x" * MAX_ROW_BYTES})
    assert o.counters()["refused.too_large.raw"] == 1


def test_outboxes_made_through_sqlite_utils_open_unchanged_and_back(tmp_path: Path) -> None:
    """Agents before this one kept the outbox through sqlite-utils' Migrations: the device's own
    runner reads the same ``_sqlite_migrations`` history (no migration runs twice, rows and the
    incarnation stay) and sqlite-utils sees an outbox made here as fully migrated."""
    from sqlite_utils import Database as UtilsDatabase
    from sqlite_utils.migrations import Migrations

    from device.outbox import MIGRATION_SET, MIGRATIONS

    def utils_migrations() -> Migrations:
        m = Migrations(MIGRATION_SET)
        for fn in MIGRATIONS:
            m()(fn)
        return m

    old_path = tmp_path / "old.db"
    db = UtilsDatabase(old_path)
    utils_migrations().apply(db)
    inc = db.execute("SELECT value FROM kv WHERE key = 'incarnation'").fetchone()[0].decode()
    db.execute("INSERT INTO outbox (kind, priority, individual_id, ts, body, size, created) "
               "VALUES ('event', 0, 'rex', 1.0, '{}', 66, 1.0)")
    db.close()
    o = Outbox(old_path)
    assert o.incarnation == inc and len(inc) == 32
    assert o.pending_seqs() == [1] and o.append("event", "rex", 2.0, {}) == 2
    o.close()

    new_path = tmp_path / "new.db"
    Outbox(new_path).close()
    db = UtilsDatabase(new_path)
    assert utils_migrations().pending(db) == []
    assert [m.name for m in utils_migrations().applied(db)] == [fn.__name__ for fn in MIGRATIONS]
    db.close()


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    o = Outbox(tmp_path / "o.db")
    o.append("event", "rex", 1.0, {})
    with pytest.raises(RuntimeError), o.db.atomic():
        o.db.execute("DELETE FROM outbox")
        with o.db.atomic():  # nested: a savepoint
            o.db.execute("INSERT INTO kv (key, value) VALUES ('x', x'00')")
        raise RuntimeError("power cut")
    assert o.pending_count() == 1 and o.get("x") is None
    with o.db.atomic():
        o.db.execute("INSERT INTO kv (key, value) VALUES ('y', x'01')")
        with pytest.raises(sqlite3.IntegrityError), o.db.atomic():
            o.db.execute("INSERT INTO kv (key, value) VALUES ('y', x'02')")  # the savepoint alone
    assert o.get("y") == b"\x01"
