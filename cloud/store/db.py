"""The cloud store. A record is keyed by (device_id, incarnation, seq): a redelivered record is
stored once, and a device whose storage was reset (a new incarnation, seqs from 1 again) is not
taken for a duplicate of its earlier life.

Schema changes go through the named sqlite-utils ``Migrations`` set below (applied once each,
transactionally); other cloud modules add their own tables with their own migration sets.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.alerts import AlertRepository
from cloud.store.backend import (
    Backend,
    PostgresBackend,
    SqliteBackend,
    open_backend,
    parse_store_url,
)
from cloud.store.records import RecordRepository, StoreResult
from cloud.store.schema import apply_postgres, apply_sqlite_all
from shared.errors import InputError
from shared.schemas import UplinkBatch

__all__ = ["CloudStore", "StoreOpenError", "StoreResult", "open_store"]

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


@migrations()
def m003_device_incarnation(db: Database) -> None:
    """The incarnation a device's latest status named (commands are bound to it)."""
    db.table("devices").add_column("incarnation", str, not_null_default="")


@migrations()
def m004_leases(db: Database) -> None:
    """Lease rows: periodic work that runs once across the aggregators (cloud.store.leases)."""
    db.table("leases").create({"name": str, "holder": str, "until": float}, pk="name")


def _wal(conn: sqlite3.Connection, wait_s: float = 10.0) -> None:
    """Switch a SQLite file to WAL. Processes opening a fresh file at once can meet SQLITE_BUSY
    here without the busy handler being called (SQLite returns at once where waiting could
    deadlock: this connection holds a read lock while another wants to write), so retry."""
    deadline = time.monotonic() + wait_s
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class StoreOpenError(InputError):
    """The store file cannot be opened (a folder missing or read-only, not a database, or not there
    for a command that only reads it)."""


class CloudStore:
    """The cloud's store: a back end chosen by URL (:func:`open_store`) and its repositories.
    Every statement of the cloud is a repository's, on ``backend``; on SQLite ``db`` is the
    sqlite-utils ``Database`` the migrations run on (and tests inspect)."""

    def __init__(self, path: str | Path | None = None, *, create: bool = True) -> None:
        """``path``: a SQLite file, ``sqlite:///path``, ``postgresql://...``; None: in memory.
        ``create=False`` (commands that read what the cloud wrote) refuses a SQLite path where no
        store exists instead of creating an empty one."""
        self.url = parse_store_url(str(path) if path is not None else None)
        if self.url.path and not create and not Path(self.url.path).is_file():
            raise StoreOpenError(f"no cloud database at {self.url.path}: pass --db with the file `edgeloop cloud "
                                 "--db` writes")
        try:
            self.backend: Backend = open_backend(str(path) if path is not None else None)
            if isinstance(self.backend, SqliteBackend):
                # one connection, used by one thread at a time (the service hands it over at stop)
                self._sqlite = Database(self.backend.conn)
                if self.url.path:
                    _wal(self.backend.conn)
                    self._sqlite.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            raise StoreOpenError(f"cannot open the cloud database {self.url.path} ({exc}): check that its folder "
                                 "exists and is writable and that the file is an edgeloop database, or "
                                 "pass another --db") from None
        if isinstance(self.backend, SqliteBackend):
            self._sqlite.execute("PRAGMA busy_timeout=5000")
            apply_sqlite_all(self._sqlite)  # every table of the registry, once, when the store opens
        else:
            assert isinstance(self.backend, PostgresBackend)
            apply_postgres(self.backend)
        self.records_repo = RecordRepository(self.backend)

    @property
    def db(self) -> Database:
        """SQLite's sqlite-utils ``Database`` over the store's connection (migrations, inspection
        in tests); a PostgreSQL store has none: read through ``backend`` or a repository."""
        if self.backend.dialect != "sqlite":
            raise TypeError("store.db is a SQLite store's sqlite-utils Database; this store is on PostgreSQL: "
                            "use store.backend or a repository of cloud/store")
        return self._sqlite

    @property
    def alerts(self) -> AlertRepository:
        """The alerts, incidents and owner settings (what ``cloud.rules`` reads and writes)."""
        return AlertRepository(self.backend)

    @property
    def dialect(self) -> str:
        return self.backend.dialect

    @property
    def path(self) -> str | None:
        """The SQLite file behind this store (None in memory or on PostgreSQL)."""
        return self.url.path

    def store_batch(self, batch: UplinkBatch) -> StoreResult:
        """Insert the batch's records once each, in one transaction (the caller's, if one is
        open); returns the new ones: a record is new only if this insert stored it."""
        return self.records_repo.store_batch(batch, time.time())

    def store_many(self, batches: Sequence[UplinkBatch]) -> list[StoreResult]:
        """Several batches' records in one statement (the caller's transaction); one result each."""
        return self.records_repo.store_batches(batches, time.time())

    def note_incarnation(self, device_id: str, incarnation: str, first_seq: int) -> int | None:
        """Remember a device's incarnation; None if known, else how many it had before (0: a new
        device; more: its storage was reset)."""
        return self.records_repo.note_incarnation(device_id, incarnation, first_seq, time.time())

    def note_incarnations(self, firsts: Sequence[tuple[str, str, int]]) -> dict[tuple[str, str], int]:
        """Several (device, incarnation, first seq) at once: the new ones, with how many each
        device had before."""
        return self.records_repo.note_incarnations(firsts, time.time())

    def record(self, device_id: str, incarnation: str, seq: int) -> dict[str, Any] | None:
        """One stored record by its identity (body decoded), or None."""
        return self.records_repo.record(device_id, incarnation, seq)

    def set_device_state(self, device_id: str, state: str, ts: float | None, incarnation: str = "") -> None:
        """A status: the device's state and, from a v2 status, its current incarnation."""
        self.records_repo.set_device_state(device_id, state, ts, time.time(), incarnation)

    def current_incarnation(self, device_id: str) -> str:
        """The device's incarnation now: its latest status's, else the newest one its records
        brought, else "" (never seen, or a v1 device)."""
        return self.records_repo.current_incarnation(device_id)

    def reject(self, source: str, reason: str, size: int) -> None:
        """Record a rejected message (bounded: keeps the latest 10,000)."""
        self.reject_many([(time.time(), source, reason, size)])

    def reject_many(self, rows: list[tuple[float, str, str, int]]) -> None:
        """Record rejected messages ``(at, source, reason, size)`` in one transaction."""
        self.records_repo.reject_many(rows)

    def records(self, kind: str | None = None, individual_id: str | None = None) -> list[dict[str, Any]]:
        return self.records_repo.records(kind, individual_id)

    def count(self, kind: str | None = None) -> int:
        return self.records_repo.count(kind)

    def close(self) -> None:
        self.backend.close()


def open_store(url: str | Path | None) -> CloudStore:
    """The store a ``--db`` value names: a path or ``sqlite:///path`` (SQLite), or
    ``postgresql://user@host:port/dbname``; None/"" is an in-memory SQLite store."""
    return CloudStore(url or None)
