"""The ``deliveries`` table: one row per notification per channel, with its outcome and its next
attempt (``cloud.delivery`` sends them). Its ``Migrations`` set keeps the name string and function
names it had in ``cloud.delivery``.

Table ``deliveries``: id, alert_id, individual_id, channel, kind, state (pending | retrying | sent |
failed), attempts, last_error, created_at, updated_at, next_attempt_at, payload.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.backend import Backend

migrations = Migrations("edgeloop.cloud.deliveries")
# an attempt's claim: several aggregators share the deliveries table, and the one that queued a
# delivery (or claimed a due retry) owns it this long; past it, a process that died mid-attempt is
# assumed gone and any aggregator retries (longer than a queue of slow webhook attempts)
CLAIM_S = 300.0


@migrations()
def m001_deliveries(db: Database) -> None:
    db.table("deliveries").create(
        {"id": int, "alert_id": str, "individual_id": str, "channel": str, "kind": str, "state": str,
         "attempts": int, "last_error": str, "created_at": float, "updated_at": float,
         "next_attempt_at": float, "payload": str}, pk="id")
    db.table("deliveries").create_index(["state", "next_attempt_at"])
    db.table("deliveries").create_index(["alert_id"])


class DeliveryRepository:
    """The ``deliveries`` table."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return self.b.transaction()

    def add(self, alert_id: str, individual_id: str, channel: str, kind: str, payload: str, now: float) -> int:
        """A new delivery, claimed by the caller (it is due to others only once the claim expires)."""
        row = self.b.execute(
            "INSERT INTO deliveries (alert_id, individual_id, channel, kind, state, attempts, last_error, "
            "created_at, updated_at, next_attempt_at, payload) VALUES (?, ?, ?, ?, 'pending', 0, '', ?, ?, ?, ?) "
            "RETURNING id", [alert_id, individual_id, channel, kind, now, now, now + CLAIM_S, payload]).fetchone()
        return int(row[0])

    def claim(self, row_id: int, now: float) -> bool:
        """Take a due delivery for one attempt: True for exactly one of the aggregators sharing
        the store (its ``next_attempt_at`` moves ``CLAIM_S`` ahead, so the others skip it)."""
        cur = self.b.execute("UPDATE deliveries SET next_attempt_at = ?, updated_at = ? WHERE id = ? "
                             "AND state IN ('pending', 'retrying') AND next_attempt_at <= ?",
                             [now + CLAIM_S, now, row_id, now])
        return cur.rowcount == 1

    def outcome(self, row_id: int, state: str, attempts: int, error: str, next_at: float, now: float) -> None:
        self.b.execute("UPDATE deliveries SET state = ?, attempts = ?, last_error = ?, updated_at = ?, "
                       "next_attempt_at = ? WHERE id = ?", [state, attempts, error[:500], now, next_at, row_id])

    def due(self, now: float, exclude: set[int]) -> list[dict[str, Any]]:
        """Open deliveries due at ``now`` (at most 100, the longest due first), but those in ``exclude``."""
        rows = self.b.query(
            "SELECT id, alert_id, individual_id, channel, kind, attempts, payload FROM deliveries "
            "WHERE state IN ('pending', 'retrying') AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 100",
            [now])
        return [r for r in rows if r["id"] not in exclude]

    def recent(self, limit: int = 100, alert_id: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE alert_id = ?", [alert_id]) if alert_id else ("", [])
        return self.b.query(f"SELECT id, alert_id, individual_id, channel, kind, state, attempts, last_error, "
                            f"created_at, updated_at, next_attempt_at FROM deliveries {where} "
                            f"ORDER BY id DESC LIMIT ?", [*args, limit])

    def counts(self) -> dict[tuple[str, str], int]:
        """(channel, state) -> rows."""
        return {(c, s): int(n) for c, s, n in self.b.execute(
            "SELECT channel, state, COUNT(*) FROM deliveries GROUP BY channel, state").fetchall()}
