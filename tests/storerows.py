"""Test helper: read a cloud store's rows on either back end (through its ``Backend``)."""

from __future__ import annotations

from typing import Any

from cloud.store.db import CloudStore

_KEYS = {"alerts": "alert_id", "incidents": "incident_id", "commands": "command_id", "deliveries": "id"}


def row(store: CloudStore, table: str, key: Any) -> dict[str, Any]:
    """The row of ``table`` with primary key ``key`` (KeyError if there is none)."""
    rows = store.backend.query(f"SELECT * FROM {table} WHERE {_KEYS[table]} = ?", [key])
    if not rows:
        raise KeyError(f"{table} {key!r}")
    return rows[0]


def rows(store: CloudStore, sql: str, *args: Any) -> list[dict[str, Any]]:
    return store.backend.query(sql, args)


def count(store: CloudStore, table: str, where: str = "", *args: Any) -> int:
    sql = f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "")
    return int(store.backend.execute(sql, args).fetchone()[0])
