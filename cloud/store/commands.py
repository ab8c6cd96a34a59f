"""Signed downlink commands as the cloud keeps them: each device's ``(epoch, counter)`` and every
command sent, with its reason (``cloud.commands`` signs and publishes them).

The tables come from this module's ``Migrations`` set (name string and function names unchanged
from when it lived in ``cloud.commands``, so existing SQLite files keep working).
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.backend import Backend

migrations = Migrations("edgeloop.cloud.commands")
COMMAND_COLUMNS = ("command_id", "device_id", "name", "counter", "args", "sent_at", "reason", "epoch",
                   "expires_at", "incarnation")


@migrations()
def m001_commands(db: Database) -> None:
    db.table("command_counters").create({"device_id": str, "counter": int}, pk="device_id")
    db.table("commands").create({"command_id": str, "device_id": str, "name": str, "counter": int, "args": str,
                           "sent_at": float, "reason": str}, pk="command_id")


@migrations()
def m002_command_epoch(db: Database) -> None:
    """Commands v2: the device's epoch next to its counter; each command's expiry, epoch, incarnation."""
    db.table("command_counters").add_column("epoch", int, not_null_default=0)
    for name, kind in (("epoch", int), ("expires_at", float), ("incarnation", str)):
        db.table("commands").add_column(name, kind)


class CommandRepository:
    """``command_counters`` and ``commands``."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def position(self, device_id: str) -> tuple[int, int]:
        """The (epoch, counter) of the last command signed for ``device_id`` ((0, 0): none)."""
        row = self.b.execute("SELECT epoch, counter FROM command_counters WHERE device_id = ?",
                             [device_id]).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def set_position(self, device_id: str, epoch: int, counter: int) -> None:
        self.b.execute("INSERT INTO command_counters (device_id, counter, epoch) VALUES (?, ?, ?) "
                       "ON CONFLICT (device_id) DO UPDATE SET counter = excluded.counter, epoch = excluded.epoch",
                       [device_id, counter, epoch])

    def save(self, row: dict[str, Any]) -> None:
        """Keep a sent command (``row``: its ``COMMAND_COLUMNS``; a command id sent again replaces it)."""
        cols = COMMAND_COLUMNS[1:]
        self.b.execute(f"INSERT INTO commands ({', '.join(COMMAND_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(COMMAND_COLUMNS))}) ON CONFLICT (command_id) DO UPDATE SET "
                       + ", ".join(f"{c} = excluded.{c}" for c in cols), [row.get(c) for c in COMMAND_COLUMNS])

    def count(self) -> int:
        return int(self.b.execute("SELECT COUNT(*) FROM commands").fetchone()[0])

    def sent(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """The commands kept (of one device, or all), in the order they were signed (epoch, counter)."""
        if device_id is None:
            return self.b.query("SELECT * FROM commands ORDER BY device_id, epoch, counter")
        return self.b.query("SELECT * FROM commands WHERE device_id = ? ORDER BY epoch, counter", [device_id])
