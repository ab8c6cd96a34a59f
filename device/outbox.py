"""Store-and-forward outbox in SQLite (WAL, synchronous=FULL), through the standard library.

A row lives until the cloud acknowledges that it stored it (application-level ack on the
device's ack topic); PUBACK from the broker only marks it ``published``. Rows published but not
acked within ``resend_after`` seconds become due again (the cloud dedupes by the record identity).
Sequence numbers come from ``AUTOINCREMENT``: strictly increasing, never reused, even after a
crash or deletions.

The outbox is bounded in bytes: when full, rows are evicted lowest priority first, oldest first
(raw windows, then summaries); events (priority 0) are never evicted: when only events remain,
``append`` raises BufferFullError and the agent counts the refusal. Every eviction is counted.

Identity: the outbox's ``incarnation`` (``uuid4().hex``) is made once, with the outbox, and sent
with every batch; a record is ``(device_id, incarnation, seq)``, so a device whose storage is reset
(new outbox, sequence numbers from 1 again) is never taken for a duplicate of its earlier life.
An outbox from before incarnations keeps "" while it still holds rows the cloud may have stored
under that identity. Rows the cloud refuses for good move to the ``rejected`` table (kept,
counted, bounded; never sent again).

The device talks to SQLite through :mod:`sqlite3` alone (sqlite-utils, which the cloud uses, would
add its CLI and plugin stack to every device process: 4 MB resident and 60 ms of start-up); the
schema history stays in sqlite-utils' ``_sqlite_migrations`` table, so outboxes made by earlier
agents open unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)
MIGRATION_SET = "edgeloop.device.outbox"

PRIORITY = {"event": 0, "report": 1, "summary": 2, "raw": 3}  # lower = more important
NEVER_EVICT = 0
MAX_ROW_BYTES = 128 * 1024  # half the cloud's message cap: any row fits in a batch


class BufferFullError(RuntimeError):
    """The outbox is full of rows that may not be evicted (events)."""


class _Executes(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


class Database:
    """A connection in autocommit mode: a statement outside :meth:`atomic` commits at once (as
    sqlite-utils' ``Database.execute`` does); ``atomic()`` is one transaction, savepoints inside."""

    def __init__(self, path: str | Path | None) -> None:
        self.conn = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, parameters)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[Database]:
        """All statements inside commit together or not at all."""
        if self.conn.in_transaction:
            self.conn.execute("SAVEPOINT atomic")
            try:
                yield self
            except BaseException:
                if self.conn.in_transaction:  # an error may have ended the transaction already
                    self.conn.execute("ROLLBACK TO SAVEPOINT atomic")
                    self.conn.execute("RELEASE SAVEPOINT atomic")
                raise
            self.conn.execute("RELEASE SAVEPOINT atomic")
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


def m001_outbox(db: _Executes) -> None:
    db.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
        "priority INTEGER NOT NULL, individual_id TEXT NOT NULL, ts REAL NOT NULL, body TEXT NOT NULL, "
        "size INTEGER NOT NULL, created REAL NOT NULL, published_at REAL)"
    )
    db.execute("CREATE INDEX outbox_due ON outbox (published_at, seq)")
    db.execute("CREATE INDEX outbox_evict ON outbox (priority, seq)")
    db.execute("CREATE TABLE [counters] ([name] TEXT PRIMARY KEY, [value] INTEGER)")
    db.execute("CREATE TABLE [kv] ([key] TEXT PRIMARY KEY, [value] BLOB)")


def m002_incarnation_and_rejected(db: _Executes) -> None:
    """The outbox's incarnation, and a table for rows the cloud refused for good."""
    legacy = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] > 0
    # rows queued before incarnations may be stored at the cloud under (device, "", seq) already
    inc = "" if legacy else uuid.uuid4().hex
    db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('incarnation', ?)", [inc.encode()])
    db.execute(
        "CREATE TABLE rejected (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, individual_id TEXT NOT NULL, "
        "ts REAL NOT NULL, body TEXT NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL, "
        "rejected_at REAL NOT NULL, reason TEXT NOT NULL)")


MIGRATIONS: tuple[Callable[[Database], None], ...] = (m001_outbox, m002_incarnation_and_rejected)


def migrate(db: Database) -> list[str]:
    """Apply the migrations this outbox has not had yet, each in its own transaction with its
    record in ``_sqlite_migrations`` (sqlite-utils' table and layout); returns their names."""
    db.execute("CREATE TABLE IF NOT EXISTS [_sqlite_migrations] ([id] INTEGER PRIMARY KEY, "
               "[migration_set] TEXT, [name] TEXT, [applied_at] TEXT)")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS [idx__sqlite_migrations_migration_set_name] "
               "ON [_sqlite_migrations] ([migration_set], [name])")
    done = {r[0] for r in db.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                                     [MIGRATION_SET])}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db.atomic():
            fn(db)
            db.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
                       [MIGRATION_SET, fn.__name__, str(datetime.datetime.now(datetime.UTC))])
        applied.append(fn.__name__)
    return applied


@dataclass(frozen=True)
class RejectedRow:
    seq: int
    kind: str
    individual_id: str
    reason: str
    rejected_at: float


@dataclass(frozen=True)
class Row:
    seq: int
    kind: str
    individual_id: str
    ts: float
    body: dict[str, Any]
    size: int = 0  # stored bytes (JSON body + overhead): batches are bounded by it


class Outbox:
    """The device's durable queue plus a small key-value store (engine state, counters)."""

    def __init__(self, path: str | Path | None, max_bytes: int = 64 * 1024 * 1024,
                 resend_after: float = 30.0, raw_ttl: float = 7 * 86400.0) -> None:
        self.db = Database(path)
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        migrate(self.db)
        self.max_bytes = max_bytes
        self.resend_after = resend_after
        self.raw_ttl = raw_ttl
        self.rejected_max_bytes = max(MAX_ROW_BYTES, max_bytes // 8)
        self._bytes: int = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
        self.incarnation = (self.get("incarnation") or b"").decode()

    # ---- queue -------------------------------------------------------------------------------
    def append(self, kind: str, individual_id: str, ts: float, body: dict[str, Any],
               marks: dict[str, bytes] | None = None) -> int:
        """Durably add a row (committed before returning); returns its sequence number. ``marks``
        are key-value pairs committed with the row (the agent's replay watermark)."""
        data = json.dumps(body, separators=(",", ":"), allow_nan=False)
        size = len(data) + 64
        if size > MAX_ROW_BYTES:
            self.bump("refused.too_large." + kind)
            raise BufferFullError(f"{kind} row of {size} bytes exceeds {MAX_ROW_BYTES}: it could never be sent "
                                  "(MQTT messages are capped); send less per record")
        prio = PRIORITY[kind]
        try:
            with self.db.atomic():
                self._make_room(size, prio)
                cur = self.db.execute(
                "INSERT INTO outbox (kind, priority, individual_id, ts, body, size, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", [kind, prio, individual_id, ts, data, size, time.time()])
                for key, value in (marks or {}).items():
                    self.db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", [key, value])
                self._bump("appended." + kind)
        except BufferFullError:
            self.bump("refused.full." + kind)
            raise
        except sqlite3.OperationalError as exc:  # SQLITE_FULL: the disk ran out before max_bytes
            if "full" not in str(exc) or not self._evict_for_disk(prio):
                raise BufferFullError(f"disk full ({exc}) and nothing evictable: free disk space or "
                                      "lower outbox.max_bytes below the partition size") from None
            return self.append(kind, individual_id, ts, body, marks)
        self._bytes += size
        return int(cur.lastrowid or 0)

    def _evictable(self, prio: int, limit: int = -1) -> list[tuple[int, int, str]]:
        """(seq, size, kind) of rows a new row of priority ``prio`` may displace, in eviction order:
        least important first, oldest first; events (priority 0) never."""
        return self.db.execute(
            "SELECT seq, size, kind FROM outbox WHERE priority > ? AND priority >= ? "
            "ORDER BY priority DESC, seq ASC LIMIT ?", [NEVER_EVICT, prio, limit]).fetchall()

    def _evict(self, victims: list[tuple[int, int, str]], counter: str) -> int:
        """Delete ``victims`` and count each under ``counter.<kind>`` (inside the caller's transaction)."""
        self.db.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
        for _, _, kind in victims:
            self._bump(f"{counter}.{kind}")
        freed = sum(v[1] for v in victims)
        self._bytes -= freed
        if victims:
            logger.warning("outbox.evicted", extra={"rows": len(victims), "bytes": freed, "why": counter})
        return freed

    def _make_room(self, size: int, prio: int) -> None:
        """Evict until a row of ``size`` bytes fits under max_bytes, or raise BufferFullError."""
        if self._bytes + size <= self.max_bytes:
            return
        victims, freed = [], 0
        for v in self._evictable(prio):
            if self._bytes - freed + size <= self.max_bytes:
                break
            victims.append(v)
            freed += v[1]
        if self._bytes - freed + size > self.max_bytes:
            raise BufferFullError(
                f"outbox full ({self._bytes} of {self.max_bytes} bytes, only unsendable or higher "
                "priority rows left): restore the uplink or raise outbox.max_bytes")
        self._evict(victims, "evicted")

    def _evict_for_disk(self, prio: int, n: int = 32) -> int:
        """The file system is full: drop up to ``n`` evictable rows (same order as the byte bound)."""
        try:
            with self.db.atomic():
                victims = self._evictable(prio, n)
                self._evict(victims, "evicted.disk_full")
        except sqlite3.OperationalError:  # rolled back: the byte count follows the table again
            self._bytes = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
            return 0
        return len(victims)

    def due(self, limit: int = 100, now: float | None = None) -> list[Row]:
        """Rows to (re)send: never published, or published and not acked for resend_after s (or
        'published in the future': the wall clock went back, so the row is due at once)."""
        now = time.time() if now is None else now
        cur = self.db.execute(
            "SELECT seq, kind, individual_id, ts, body, size FROM outbox WHERE published_at IS NULL "
            "OR published_at < ? OR published_at > ? ORDER BY priority ASC, seq ASC LIMIT ?",
            [now - self.resend_after, now + 1.0, limit])
        return [Row(s, k, i, t, json.loads(b), z) for s, k, i, t, b, z in cur.fetchall()]

    def mark_published(self, seqs: list[int], now: float | None = None) -> None:
        """The broker acknowledged (PUBACK) these rows: not due again until resend_after."""
        now = time.time() if now is None else now
        with self.db.atomic():
            self.db.conn.executemany("UPDATE outbox SET published_at = ? WHERE seq = ?", [(now, s) for s in seqs])

    def unmark_published(self) -> None:
        """After a reconnect: everything unacked is due at once (the session may be gone)."""
        with self.db.atomic():
            self.db.execute("UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL")

    def ack(self, seqs: list[int]) -> int:
        """The cloud stored these rows: delete them. Returns how many were still here."""
        with self.db.atomic():
            n = 0
            for s in seqs:
                row = self.db.execute("DELETE FROM outbox WHERE seq = ? RETURNING size", [s]).fetchone()
                if row:
                    n += 1
                    self._bytes -= row[0]
            self._bump("acked", n)
        return n

    def reject(self, rejections: Iterable[tuple[int, str]], now: float | None = None) -> list[RejectedRow]:
        """The cloud refused these rows for good: move them to ``rejected`` (never sent again),
        counted as ``rejected.<kind>``. The table keeps the newest rows up to max_bytes/8 (older
        ones dropped and counted as ``rejected_dropped``). Returns the rows moved."""
        now = time.time() if now is None else now
        moved: list[RejectedRow] = []
        with self.db.atomic():
            for seq, reason in rejections:
                row = self.db.execute(
                    "DELETE FROM outbox WHERE seq = ? RETURNING kind, individual_id, ts, body, size, created",
                    [seq]).fetchone()
                if row is None:
                    continue  # acked, refused or evicted already
                kind, ind, ts, body, size, created = row
                self.db.execute("INSERT OR REPLACE INTO rejected (seq, kind, individual_id, ts, body, size, created, "
                                "rejected_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [seq, kind, ind, ts, body, size, created, now, reason])
                self._bytes -= size
                self._bump("rejected." + kind)
                moved.append(RejectedRow(seq, kind, ind, reason, now))
            if moved:
                self._trim_rejected()
        return moved

    def _trim_rejected(self) -> None:
        total = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM rejected").fetchone()[0]
        if total <= self.rejected_max_bytes:
            return
        dropped = 0
        for seq, size in self.db.execute("SELECT seq, size FROM rejected ORDER BY seq").fetchall():
            if total <= self.rejected_max_bytes:
                break
            self.db.execute("DELETE FROM rejected WHERE seq = ?", [seq])
            total -= size
            dropped += 1
        self._bump("rejected_dropped", dropped)

    def rejected_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0])

    def rejected_rows(self, limit: int = 5) -> list[RejectedRow]:
        """The newest rows the cloud refused (newest first)."""
        return [RejectedRow(*r) for r in self.db.execute(
            "SELECT seq, kind, individual_id, reason, rejected_at FROM rejected ORDER BY rejected_at DESC, seq DESC "
            "LIMIT ?", [limit])]

    def expire(self, now: float | None = None) -> int:
        """Drop raw windows older than raw_ttl (counted)."""
        now = time.time() if now is None else now
        with self.db.atomic():
            rows = self.db.execute("DELETE FROM outbox WHERE kind = 'raw' AND created < ? RETURNING size",
                                   [now - self.raw_ttl]).fetchall()
            if rows:
                self._bump("expired.raw", len(rows))
        self._bytes -= sum(r[0] for r in rows)
        return len(rows)

    def pending_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def pending_seqs(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT seq FROM outbox ORDER BY seq")]

    @property
    def bytes_used(self) -> int:
        return self._bytes

    # ---- counters and key-value state ----------------------------------------------------------
    def _bump(self, name: str, by: int = 1) -> None:
        if by:
            self.db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
                            "DO UPDATE SET value = value + excluded.value", [name, by])

    def bump(self, name: str, by: int = 1) -> None:
        with self.db.atomic():
            self._bump(name, by)

    def counters(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT name, value FROM counters")}

    def put(self, key: str, value: bytes) -> None:
        self.put_many({key: value})

    def put_many(self, items: dict[str, bytes]) -> None:
        """Store several key-value pairs in one transaction (all or none survive a crash)."""
        with self.db.atomic():
            for key, value in items.items():
                self.db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", [key, value])

    def get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
        return None if row is None else bytes(row[0])

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def close(self) -> None:
        self.db.close()
