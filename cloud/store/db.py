"""The cloud store. A record is keyed by (device_id, incarnation, seq): a redelivered record is
stored once, and a device whose storage was reset (a new incarnation, seqs from 1 again) is not
taken for a duplicate of its earlier life.

Schema changes go through the named sqlite-utils ``Migrations`` set below (applied once each,
transactionally); other cloud modules add their own tables with their own migration sets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from shared.codec import to_json
from shared.errors import InputError
from shared.schemas import Record, UplinkBatch

logger = logging.getLogger(__name__)
migrations = Migrations("edgeloop.cloud.store")


@migrations()
def m001_records(db: Database) -> None:
    db.table("records").create(
        {"device_id": str, "seq": int, "kind": str, "ts": float, "individual_id": str,
         "body": str, "received_at": float},
        pk=("device_id", "seq"),
    )
    db.table("records").create_index(["individual_id", "ts"])
    db.table("records").create_index(["kind", "ts"])
    db.table("devices").create(
        {"device_id": str, "state": str, "last_seen": float, "status_ts": float}, pk="device_id"
    )
    db.table("rejections").create(
        {"id": int, "at": float, "source": str, "reason": str, "size": int}, pk="id"
    )


@migrations()
def m002_record_incarnation(db: Database) -> None:
    """The record identity gains the device's incarnation (v1 records keep "")."""
    db.table("records").add_column("incarnation", str, not_null_default="")
    db.table("records").transform(pk=("device_id", "incarnation", "seq"),
                            column_order=["device_id", "incarnation", "seq"])
    db.table("incarnations").create({"device_id": str, "incarnation": str, "first_seen": float, "first_seq": int},
                              pk=("device_id", "incarnation"))
    db.execute("INSERT INTO incarnations (device_id, incarnation, first_seen, first_seq) "
               "SELECT device_id, incarnation, MIN(received_at), MIN(seq) FROM records "
               "GROUP BY device_id, incarnation")


@contextlib.contextmanager
def write_lock(db: Database) -> Iterator[None]:
    """One transaction that takes SQLite's write lock up front (``BEGIN IMMEDIATE``), so two
    aggregators on one database cannot both act on stale reads; nested use is a savepoint."""
    if db.conn.in_transaction:
        with db.atomic():
            yield
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    else:
        db.conn.execute("COMMIT")


@dataclass(frozen=True)
class StoreResult:
    new: tuple[Record, ...]
    duplicates: int


class StoreOpenError(InputError):
    """The store file cannot be opened (a folder missing or read-only, not a database, or not there
    for a command that only reads it)."""


class CloudStore:
    """Thin typed wrapper over the cloud's SQLite database. ``create=False`` (commands that read
    what the cloud wrote) refuses a path where no store exists instead of creating an empty one."""

    def __init__(self, path: str | Path | None = None, *, create: bool = True) -> None:
        if path is None:
            self.db = Database(sqlite3.connect(":memory:", check_same_thread=False))
        else:
            if not create and not Path(path).is_file():
                raise StoreOpenError(f"no cloud database at {path}: pass --db with the file `edgeloop cloud "
                                     "--db` writes")
            try:  # one connection, used by one thread at a time (the service hands it over at stop)
                self.db = Database(sqlite3.connect(str(path), check_same_thread=False))
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
            except sqlite3.DatabaseError as exc:
                raise StoreOpenError(f"cannot open the cloud database {path} ({exc}): check that its folder "
                                     "exists and is writable and that the file is an edgeloop database, or "
                                     "pass another --db") from None
        self.db.execute("PRAGMA busy_timeout=5000")
        if migrations.pending(self.db):
            with write_lock(self.db):  # two processes opening a fresh file at once must queue
                migrations.apply(self.db)

    def store_batch(self, batch: UplinkBatch) -> StoreResult:
        """Insert the batch's records once each, in one transaction (the caller's, if one is
        open); returns the new ones: a record is new only if this insert stored it."""
        now = time.time()
        new: list[Record] = []
        dup = 0
        with self.db.atomic():
            for r in batch.records:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO records (device_id, incarnation, seq, kind, ts, individual_id, body, "
                    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [batch.device_id, batch.incarnation, r.seq, r.kind, r.ts, r.individual_id,
                     json.dumps(to_json(r.body), separators=(",", ":")), now],
                )
                if cur.rowcount == 1:
                    new.append(r)
                else:
                    dup += 1
        return StoreResult(tuple(new), dup)

    def note_incarnation(self, device_id: str, incarnation: str, first_seq: int) -> int | None:
        """Remember a device's incarnation; None if known, else how many it had before (0: a new
        device; more: its storage was reset)."""
        cur = self.db.execute("INSERT OR IGNORE INTO incarnations (device_id, incarnation, first_seen, first_seq) "
                              "VALUES (?, ?, ?, ?)", [device_id, incarnation, time.time(), first_seq])
        if cur.rowcount != 1:
            return None
        return int(self.db.execute("SELECT COUNT(*) - 1 FROM incarnations WHERE device_id = ?",
                                   [device_id]).fetchone()[0])

    def record(self, device_id: str, incarnation: str, seq: int) -> dict[str, Any] | None:
        """One stored record by its identity (body decoded), or None."""
        rows = list(self.db["records"].rows_where("device_id = ? AND incarnation = ? AND seq = ?",
                                                  [device_id, incarnation, seq]))
        return dict(rows[0], body=json.loads(rows[0]["body"])) if rows else None

    def set_device_state(self, device_id: str, state: str, ts: float) -> None:
        self.db.table("devices").upsert(
            {"device_id": device_id, "state": state, "last_seen": time.time(), "status_ts": ts},
            pk="device_id",
        )

    def reject(self, source: str, reason: str, size: int) -> None:
        """Record a rejected message (bounded: keeps the latest 10,000)."""
        self.reject_many([(time.time(), source, reason, size)])

    def reject_many(self, rows: list[tuple[float, str, str, int]]) -> None:
        """Record rejected messages ``(at, source, reason, size)`` in one transaction."""
        with self.db.atomic():
            self.db.conn.executemany("INSERT INTO rejections (at, source, reason, size) VALUES (?, ?, ?, ?)",
                                     [(at, src[:200], reason[:500], size) for at, src, reason, size in rows])
            self.db.execute("DELETE FROM rejections WHERE id <= (SELECT MAX(id) FROM rejections) - 10000")

    def records(self, kind: str | None = None, individual_id: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if individual_id:
            where.append("individual_id = ?")
            args.append(individual_id)
        rows = self.db["records"].rows_where(" AND ".join(where) or None, args, order_by="ts, device_id, incarnation, seq")
        return [dict(r, body=json.loads(r["body"])) for r in rows]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self.db["records"].count
        return self.db.execute("SELECT COUNT(*) FROM records WHERE kind = ?", [kind]).fetchone()[0]

    def close(self) -> None:
        self.db.close()
