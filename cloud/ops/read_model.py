"""Every query the dashboard and the metrics make, in one place, on a read-only connection.

The web server's threads never share the aggregator's connection: each request opens the store
file read-only (SQLite WAL lets readers run beside the writer). Tables another module has not
created yet (no rollout ever started, say) read as empty. When the store moves behind
repositories (cloud/store/), this module is the one to port.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=5.0,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
    try:
        return [dict(r) for r in conn.execute(sql, args).fetchall()]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            return []
        raise


def _json(text: Any, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except (TypeError, ValueError):
        return default


# ---- counts for /metrics --------------------------------------------------------------------------
def devices_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    return {r["state"]: r["n"] for r in _rows(conn, "SELECT state, COUNT(*) AS n FROM devices GROUP BY state")}


def rollouts_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    return {r["state"]: r["n"] for r in _rows(conn, "SELECT state, COUNT(*) AS n FROM rollouts GROUP BY state")}


def feedback_by_action(conn: sqlite3.Connection) -> dict[str, int]:
    return {r["action"]: r["n"] for r in _rows(conn, "SELECT action, COUNT(*) AS n FROM feedback GROUP BY action")}


def deliveries_by_state(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {(r["channel"], r["state"]): r["n"] for r in _rows(
        conn, "SELECT channel, state, COUNT(*) AS n FROM deliveries GROUP BY channel, state")}


def alerts_by_action(conn: sqlite3.Connection) -> dict[str, int]:
    return {r["action"]: r["n"] for r in _rows(conn, "SELECT action, COUNT(*) AS n FROM alerts GROUP BY action")}


def retrain_requests_open(conn: sqlite3.Connection) -> int:
    rows = _rows(conn, "SELECT COUNT(*) AS n FROM retrain_requests WHERE status IN ('open', 'new', '')")
    return int(rows[0]["n"]) if rows else 0
