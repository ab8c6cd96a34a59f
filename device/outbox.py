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

A full disk is met at any moment, start included (:func:`out_of_space`: SQLITE_FULL, or an
SQLITE_IOERR when a file cannot grow). An outbox that cannot be opened is *unavailable*: an
empty in-memory stand-in answers reads, ``append`` raises :class:`OutboxUnavailableError`, and
:meth:`Outbox.try_open` opens the file once space returns. Once open, writes that do not fit are
held in memory and land with the next write that does (:meth:`Outbox.settle`): acks (the rows are
not sent again meanwhile), refusals, PUBACK marks, counters; ``put_many`` raises
:class:`DiskFullError` (the agent counts unsaved state). The WAL is bounded from ``max_bytes``
(``journal_size_limit``, ``wal_autocheckpoint``; a TRUNCATE checkpoint after deletes when it is
over the limit), so the disk fills with rows, not with a WAL; below the limit its frames stay
allocated, the room a full disk leaves for the deletes that make room. Evictions are logged once
committed.

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
import os
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)
MIGRATION_SET = "edgeloop.device.outbox"

PRIORITY = {"event": 0, "report": 1, "summary": 2, "raw": 3}  # lower = more important
NEVER_EVICT = 0
MAX_ROW_BYTES = 128 * 1024  # half the cloud's message cap: any row fits in a batch


SQLITE_IOERR, SQLITE_FULL = 10, 13  # primary result codes (extended codes keep them in the low byte)
WAL_FRAME = 4096 + 24  # a WAL frame: one page and its header
RESERVE_RETRY_S = 10.0  # a reserve given up: make it again (when the disk has room) this often


class BufferFullError(RuntimeError):
    """The outbox is full of rows that may not be evicted (events), or the disk is."""


class OutboxUnavailableError(BufferFullError):
    """The outbox file could not be opened (the disk is full): rows cannot be kept yet."""


class DiskFullError(RuntimeError):
    """A write could not be kept: the file system is full (or the outbox is unavailable)."""


def out_of_space(exc: BaseException) -> bool:
    """True when SQLite could not write for lack of space: SQLITE_FULL, or an SQLITE_IOERR (a
    full file system makes growing the ``-shm`` or ``-wal`` file fail with one)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in (
        SQLITE_FULL, SQLITE_IOERR)


def wal_limit_for(max_bytes: int) -> int:
    """The WAL's bound for an outbox of ``max_bytes``: a quarter of it, within 64 KiB .. 1 MiB."""
    return min(1024 * 1024, max(64 * 1024, max_bytes // 4))


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
        self.path = path
        self.max_bytes = max_bytes
        self.resend_after = resend_after
        self.raw_ttl = raw_ttl
        self.rejected_max_bytes = max(MAX_ROW_BYTES, max_bytes // 8)
        self.wal_limit = wal_limit_for(max_bytes)
        # writes that did not fit on the disk, held until one does (see settle)
        self._unsaved_counts: Counter[str] = Counter()
        self._unsaved_acks: set[int] = set()
        self._unsaved_rejects: dict[int, tuple[str, float]] = {}
        self._unsaved_published: dict[int, float] = {}
        self._unsaved_logged = False
        # checkpoint when the WAL holds a quarter of its bound
        self.wal_autocheckpoint = max(2, self.wal_limit // (4 * WAL_FRAME))
        # the reserve: a file beside the outbox, given up when the disk is full so a checkpoint can
        # grow the database by the WAL's new pages (up to the autocheckpoint and a transaction)
        # and the WAL can rewind; then deletes fit in its frames
        self.reserve_bytes = (self.wal_autocheckpoint + 8) * 4096
        self.reserve_retry_s = RESERVE_RETRY_S
        self._reserve_tried = -float("inf")
        self._reserve = None if path is None else Path(f"{path}-reserve")
        self._reserve_held = False  # the reserve file is there (made or found at open)
        self.available = False
        self.unavailable_reason = ""
        self.db = Database(None)  # the stand-in while the file cannot be opened (empty, never written)
        migrate(self.db)
        self._bytes = 0
        self.incarnation = ""
        self.try_open()

    def try_open(self) -> bool:
        """Open the outbox file if it is not open yet; False while the disk is too full for it."""
        if self.available:
            return True
        try:
            db = self._open()
        except sqlite3.OperationalError as exc:
            if not out_of_space(exc):
                raise
            if not self.unavailable_reason:
                logger.error("outbox.unavailable", extra={"path": str(self.path), "reason": (
                    f"{exc}: the disk is full; scoring goes on, records are counted and not kept "
                    "until space returns (free disk space)")})
            self.unavailable_reason = str(exc)
            return False
        self.db.close()
        self.db, self.available, self.unavailable_reason = db, True, ""
        self._reserve_held = self._reserve is not None and self._reserve.exists()
        self._keep_reserve()
        self._bytes = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
        self.incarnation = (self.get("incarnation") or b"").decode()
        return True

    def _open(self) -> Database:
        db = Database(self.path)
        try:
            if self.path is not None:
                db.execute("PRAGMA journal_mode=WAL")
                # the WAL is bounded: checkpoint at a quarter of the limit, cut back to it when rewound
                db.execute(f"PRAGMA journal_size_limit = {self.wal_limit}")
                db.execute(f"PRAGMA wal_autocheckpoint = {self.wal_autocheckpoint}")
            db.execute("PRAGMA synchronous=FULL")
            migrate(db)
        except BaseException:
            db.close()
            raise
        return db

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
        if not self.available:
            self._unsaved_counts["refused.unavailable." + kind] += 1
            raise OutboxUnavailableError(f"outbox {self.path} unavailable ({self.unavailable_reason}): "
                                         "free disk space; it opens again by itself")
        self.settle()
        prio = PRIORITY[kind]
        try:
            with self.db.atomic():
                victims = self._make_room(size, prio)
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
            if not out_of_space(exc):
                raise
            self._room()
            if not self._evict_for_disk(prio):
                self.bump("refused.disk_full." + kind)
                raise BufferFullError(f"disk full ({exc}) and nothing evictable: free disk space or "
                                      "lower outbox.max_bytes below the partition size") from None
            return self.append(kind, individual_id, ts, body, marks)
        self._bytes += size - self._committed_eviction(victims, "evicted")
        self._keep_reserve()
        return int(cur.lastrowid or 0)

    def _evictable(self, prio: int, limit: int = -1) -> list[tuple[int, int, str]]:
        """(seq, size, kind) of rows a new row of priority ``prio`` may displace, in eviction order:
        least important first, oldest first; events (priority 0) never."""
        return self.db.execute(
            "SELECT seq, size, kind FROM outbox WHERE priority > ? AND priority >= ? "
            "ORDER BY priority DESC, seq ASC LIMIT ?", [NEVER_EVICT, prio, limit]).fetchall()

    def _evict(self, victims: list[tuple[int, int, str]], counter: str) -> None:
        """Delete ``victims`` and count each under ``counter.<kind>`` (inside the caller's
        transaction; the byte count and the log follow once it commits: _committed_eviction)."""
        self.db.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
        for _, _, kind in victims:
            self._bump(f"{counter}.{kind}")

    def _committed_eviction(self, victims: list[tuple[int, int, str]], counter: str) -> int:
        """After the commit: log what was evicted; returns the bytes freed."""
        freed = sum(v[1] for v in victims)
        if victims:
            logger.warning("outbox.evicted", extra={"rows": len(victims), "bytes": freed, "why": counter})
            self._after_delete()
        return freed

    def _make_room(self, size: int, prio: int) -> list[tuple[int, int, str]]:
        """Evict until a row of ``size`` bytes fits under max_bytes (returns the rows evicted), or
        raise BufferFullError."""
        if self._bytes + size <= self.max_bytes:
            return []
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
        return victims

    def _evict_for_disk(self, prio: int, n: int = 32) -> int:
        """The file system is full: drop up to ``n`` evictable rows (same order as the byte bound).
        Returns how many; 0 when there were none or the deletion itself did not fit (rolled back:
        nothing counted, nothing logged)."""
        try:
            with self.db.atomic():
                victims = self._evictable(prio, n)
                self._evict(victims, "evicted.disk_full")
        except sqlite3.OperationalError as exc:
            if not out_of_space(exc):
                raise
            return 0
        self._bytes -= self._committed_eviction(victims, "evicted.disk_full")
        return len(victims)

    def due(self, limit: int = 100, now: float | None = None) -> list[Row]:
        """Rows to (re)send: never published, or published and not acked for resend_after s (or
        'published in the future': the wall clock went back, so the row is due at once). Rows
        acked, refused or published while the disk was full are not due (their write waits)."""
        now = time.time() if now is None else now
        held = len(self._unsaved_acks) + len(self._unsaved_rejects) + len(self._unsaved_published)
        cur = self.db.execute(
            "SELECT seq, kind, individual_id, ts, body, size FROM outbox WHERE published_at IS NULL "
            "OR published_at < ? OR published_at > ? ORDER BY priority ASC, seq ASC LIMIT ?",
            [now - self.resend_after, now + 1.0, limit + held])
        found = [r for r in cur.fetchall() if not held or self._sendable(r[0], now)][:limit]
        return [Row(s, k, i, t, json.loads(b), z) for s, k, i, t, b, z in found]

    def _sendable(self, seq: int, now: float) -> bool:
        if seq in self._unsaved_acks or seq in self._unsaved_rejects:
            return False
        at = self._unsaved_published.get(seq)
        return at is None or not now - self.resend_after <= at <= now + 1.0

    def mark_published(self, seqs: list[int], now: float | None = None) -> None:
        """The broker acknowledged (PUBACK) these rows: not due again until resend_after."""
        if not self.available:
            return  # nothing was sent from the stand-in
        now = time.time() if now is None else now
        self._unsaved_published.update((s, now) for s in seqs)
        self.settle()

    def unmark_published(self) -> None:
        """After a reconnect: everything unacked is due at once (the session may be gone)."""
        self._unsaved_published.clear()
        try:
            with self.db.atomic():
                self.db.execute("UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL")
        except sqlite3.OperationalError as exc:  # not kept: those rows are due after resend_after
            if not out_of_space(exc):
                raise
            self._unsaved_counts["unsaved.unmark"] += 1

    def ack(self, seqs: list[int]) -> int:
        """The cloud stored these rows: delete them (held in memory, not sent again, while the disk
        is full). Returns how many were still here."""
        if not self.available:
            return 0
        here = [s for s in seqs if s not in self._unsaved_acks and self._holds(s)]
        self._unsaved_acks.update(here)
        self.settle()
        return len(here)

    def _holds(self, seq: int) -> bool:
        return self.db.execute("SELECT 1 FROM outbox WHERE seq = ?", [seq]).fetchone() is not None

    def reject(self, rejections: Iterable[tuple[int, str]], now: float | None = None) -> list[RejectedRow]:
        """The cloud refused these rows for good: move them to ``rejected`` (never sent again),
        counted as ``rejected.<kind>``. The table keeps the newest rows up to max_bytes/8 (older
        ones dropped and counted as ``rejected_dropped``). Returns the rows moved (none while the
        disk is full: the move waits, and the rows are not sent meanwhile)."""
        if not self.available:
            return []
        now = time.time() if now is None else now
        for seq, reason in rejections:
            if seq not in self._unsaved_rejects and self._holds(seq):
                self._unsaved_rejects[seq] = (reason, now)
        return self.settle()

    def settle(self) -> list[RejectedRow]:
        """Write what waited for space (acks, refusals, PUBACK marks, counters) in one transaction;
        kept in memory if it still does not fit. Returns the rows moved to ``rejected``."""
        if not self.available or not (self._unsaved_acks or self._unsaved_rejects
                                      or self._unsaved_published or self._unsaved_counts):
            return []
        freed = 0
        moved: list[RejectedRow] = []
        try:
            with self.db.atomic():
                freed += self._delete_acked(sorted(self._unsaved_acks))
                moved, more = self._move_rejected(self._unsaved_rejects)
                freed += more
                self.db.conn.executemany("UPDATE outbox SET published_at = ? WHERE seq = ?",
                                         [(t, s) for s, t in self._unsaved_published.items()])
                for name, by in self._unsaved_counts.items():
                    self._bump(name, by)
        except sqlite3.OperationalError as exc:
            if not out_of_space(exc):
                raise
            if self._reserve_held:
                self._room()
                return self.settle()
            if not self._unsaved_logged:  # once per full-disk spell
                logger.warning("outbox.unsaved", extra={"reason": f"{exc}: acks, refusals, PUBACK marks and "
                                                        "counters wait in memory for space (free disk space)"})
                self._unsaved_logged = True
            return []
        self._unsaved_logged = False
        self._unsaved_acks.clear()
        self._unsaved_rejects.clear()
        self._unsaved_published.clear()
        self._unsaved_counts.clear()
        self._keep_reserve()
        self._bytes -= freed
        if freed:
            self._after_delete()
        return moved

    def _delete_acked(self, seqs: list[int]) -> int:
        n, freed = 0, 0
        for s in seqs:
            row = self.db.execute("DELETE FROM outbox WHERE seq = ? RETURNING size", [s]).fetchone()
            if row:
                n += 1
                freed += row[0]
        self._bump("acked", n)
        return freed

    def _move_rejected(self, rejections: dict[int, tuple[str, float]]) -> tuple[list[RejectedRow], int]:
        moved: list[RejectedRow] = []
        freed = 0
        for seq, (reason, now) in rejections.items():
            row = self.db.execute(
                "DELETE FROM outbox WHERE seq = ? RETURNING kind, individual_id, ts, body, size, created",
                [seq]).fetchone()
            if row is None:
                continue  # acked, refused or evicted already
            kind, ind, ts, body, size, created = row
            self.db.execute("INSERT OR REPLACE INTO rejected (seq, kind, individual_id, ts, body, size, created, "
                            "rejected_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [seq, kind, ind, ts, body, size, created, now, reason])
            freed += size
            self._bump("rejected." + kind)
            moved.append(RejectedRow(seq, kind, ind, reason, now))
        if moved:
            self._trim_rejected()
        return moved, freed

    def _after_delete(self) -> None:
        """Rows went: a WAL grown past its limit (one large transaction) is checkpointed and cut
        back (TRUNCATE). Below the limit it is kept: a full disk leaves SQLite no room to write
        anything, not even the deletes that would make room, but the frames of a rewound WAL."""
        if self.path is None:
            return
        try:
            big = os.path.getsize(f"{self.path}-wal") > self.wal_limit
        except OSError:
            return
        if big:
            self._checkpoint("TRUNCATE")

    def _keep_reserve(self) -> None:
        """Make the reserve if it is missing and the disk has room for it twice over (now and
        then: a disk that is still full is not churned)."""
        path = self._reserve
        if (path is None or self._reserve_held
                or time.monotonic() - self._reserve_tried < self.reserve_retry_s):
            return
        self._reserve_tried = time.monotonic()
        try:
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 2 * self.reserve_bytes:
                return
            with open(path, "wb") as f:
                f.write(b"\0" * self.reserve_bytes)
                f.flush()
                os.fsync(f.fileno())
            self._reserve_held = True
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()

    def _room(self) -> None:
        """The disk is full: give up the reserve, then checkpoint (RESTART) so the WAL rewinds
        and its frames take the next transactions (the deletes that make room)."""
        path = self._reserve
        if path is not None and self._reserve_held:
            self._reserve_held = False
            with contextlib.suppress(OSError):
                path.unlink()
                self._unsaved_counts["reserve_used"] += 1
                logger.warning("outbox.reserve_used", extra={"path": str(path), "bytes": self.reserve_bytes})
        self._checkpoint("RESTART")

    def _checkpoint(self, mode: str) -> None:
        if self.path is None or not self.available:
            return
        try:
            self.db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.OperationalError as exc:  # the database file could not grow: next time
            if not out_of_space(exc):
                raise

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
        try:
            with self.db.atomic():
                rows = self.db.execute("DELETE FROM outbox WHERE kind = 'raw' AND created < ? RETURNING size",
                                       [now - self.raw_ttl]).fetchall()
                if rows:
                    self._bump("expired.raw", len(rows))
        except sqlite3.OperationalError as exc:  # the disk is full: they expire next time
            if not out_of_space(exc):
                raise
            return 0
        self._bytes -= sum(r[0] for r in rows)
        if rows:
            self._after_delete()
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
        """Count ``name`` (held in memory while the disk is full or the outbox unavailable)."""
        self._unsaved_counts[name] += by
        self.settle()

    def counters(self) -> dict[str, int]:
        """The counters, with those still waiting for space."""
        saved = Counter({r[0]: r[1] for r in self.db.execute("SELECT name, value FROM counters")})
        saved.update(self._unsaved_counts)
        return dict(saved)

    def put(self, key: str, value: bytes) -> None:
        self.put_many({key: value})

    def put_many(self, items: dict[str, bytes]) -> None:
        """Store several key-value pairs in one transaction (all or none survive a crash); raises
        DiskFullError when they could not be kept (the disk is full, the outbox unavailable)."""
        if not self.available:
            raise DiskFullError(f"outbox {self.path} unavailable ({self.unavailable_reason}): free disk space")
        self.settle()
        try:
            with self.db.atomic():
                for key, value in items.items():
                    self.db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", [key, value])
        except sqlite3.OperationalError as exc:
            if not out_of_space(exc):
                raise
            raise DiskFullError(f"{exc} writing {', '.join(items)} to {self.path}: free disk space") from None

    def get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
        return None if row is None else bytes(row[0])

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def close(self) -> None:
        self.db.close()
