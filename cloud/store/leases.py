"""Lease rows: periodic work that must run once across a group of aggregators.

A lease is a row ``(name, holder, until)``. :meth:`Leases.hold` takes the lease if it is free or
expired, or renews it if this holder has it, in one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``
that both SQLite and PostgreSQL run atomically; it says whether this holder has it now. A holder
that dies stops renewing and another takes over after ``ttl`` seconds. Times are wall-clock
seconds (every aggregator's clock is assumed within a few seconds of the others).
"""

from __future__ import annotations

import os
import socket
import uuid

from cloud.store.backend import Backend


def holder_id() -> str:
    """A name for this process, unique across hosts and restarts."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leases:
    """The ``leases`` table (created by cloud.store.db's migrations)."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def hold(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew lease ``name`` for ``ttl`` seconds; True if ``holder`` has it."""
        row = self.b.execute(
            "INSERT INTO leases (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET holder = excluded.holder, until = excluded.until "
            "WHERE leases.holder = excluded.holder OR leases.until < ? RETURNING holder",
            [name, holder, now + ttl, now]).fetchone()
        return row is not None and row[0] == holder

    def release(self, name: str, holder: str) -> None:
        """Give the lease up (a clean stop: the next holder need not wait for it to expire)."""
        self.b.execute("DELETE FROM leases WHERE name = ? AND holder = ?", [name, holder])

    def holder(self, name: str, now: float) -> str | None:
        row = self.b.execute("SELECT holder FROM leases WHERE name = ? AND until >= ?", [name, now]).fetchone()
        return None if row is None else str(row[0])
