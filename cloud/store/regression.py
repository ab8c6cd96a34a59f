"""Regression cases, release checks and the evidence the learning loop reads: their SQL, on either
back end.

``regression_cases`` and ``release_checks`` are created by the ``edgeloop.cloud.regression``
migration set below. The evidence (``alerts`` and ``feedback``) belongs to ``cloud.store.alerts``'s
set; :class:`EvidenceRepository` only reads it (and writes rows for tests and demos through
:mod:`cloud.regression.fixtures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.backend import Backend

migrations = Migrations("edgeloop.cloud.regression")


@migrations()
def m001_regression_cases(db: Database) -> None:
    db.table("regression_cases").create(
        {"id": int, "kind": str, "individual_id": str, "device_id": str, "seq": int,
         "alert_id": str, "feedback_id": int, "source_key": str, "model_version": str,
         "window": str, "expected": str, "sensitive": int, "sensitive_reason": str,
         "created": float, "source": str},
        pk="id",
    )
    db.table("regression_cases").create_index(["source_key"], unique=True)
    db.execute(
        "CREATE TRIGGER regression_cases_keep_forever BEFORE DELETE ON regression_cases "
        "BEGIN SELECT RAISE(ABORT, 'regression cases are kept forever: mark a case instead of "
        "deleting it'); END"
    )
    db.table("release_checks").create(
        {"id": int, "created": float, "candidate_name": str, "candidate_version": str,
         "candidate_sha256": str, "current_name": str, "current_version": str, "passed": int,
         "score_candidate": float, "score_current": float, "n_cases": int, "reasons": str,
         "outcomes": str},
        pk="id",
    )


@migrations()
def m002_check_detector_hash(db: Database) -> None:
    db.table("release_checks").add_column("candidate_detector_sha256", str)


def _insert_sql(table: str, columns: Sequence[str], tail: str = "") -> str:
    """``INSERT`` of these columns, each quoted (``window`` is a PostgreSQL keyword)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))}){tail}"


class EvidenceRepository:
    """Reads of ``alerts`` and ``feedback`` (the labels the loop learns from) and of the records
    a regression case keeps as its trace."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def alerts(self, since: float | None = None, *, where: str = "",
               args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Alert rows with ``ts >= since`` (all if None), oldest first (ts, alert_id). ``where``:
        an extra condition with ``?`` placeholders (kept for :func:`cloud.regression.evidence.
        load_alerts`' callers)."""
        conds: list[str] = [] if since is None else ["ts >= ?"]
        params: list[Any] = [] if since is None else [since]
        if where:
            conds.append(f"({where})")
            params += list(args)
        sql = "SELECT * FROM alerts" + (f" WHERE {' AND '.join(conds)}" if conds else "")
        return self.b.query(sql + " ORDER BY ts, alert_id", params)

    def feedback(self, until: float, actions: Sequence[str] = (), since: float | None = None, *,
                 where: str = "", args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Feedback rows with ``ts <= until`` (and ``>= since``, of ``actions`` when given), in
        (ts, id) order; ``where`` as in :meth:`alerts`."""
        conds = ["ts <= ?"]
        params: list[Any] = [until]
        if actions:
            conds.append(f"action IN ({', '.join('?' * len(actions))})")
            params += list(actions)
        if since is not None:
            conds.append("ts >= ?")
            params.append(since)
        if where:
            conds.append(f"({where})")
            params += list(args)
        return self.b.query(f"SELECT * FROM feedback WHERE {' AND '.join(conds)} ORDER BY ts, id", params)

    def add_alert(self, row: Mapping[str, Any]) -> None:
        """Insert one alert row as given (tests and demos: the rules engine writes real ones)."""
        self.b.execute(_insert_sql("alerts", list(row)), list(row.values()))

    def add_feedback(self, row: Mapping[str, Any]) -> int:
        """Insert one feedback row as given; returns its id (tests and demos)."""
        return int(self.b.execute(_insert_sql("feedback", list(row), " RETURNING id"),
                                  list(row.values())).fetchone()[0])

    def record(self, device_id: str, incarnation: str, seq: int) -> dict[str, Any] | None:
        """One record row (body still JSON text), or None."""
        rows = self.b.query("SELECT * FROM records WHERE device_id = ? AND incarnation = ? AND seq = ?",
                            [device_id, incarnation, seq])
        return rows[0] if rows else None

    def raw_records(self, device_id: str, lo: float, hi: float, limit: int) -> list[dict[str, Any]]:
        """The device's ``raw`` records with ``lo <= ts <= hi`` (body still JSON text), at most ``limit``."""
        return self.b.query("SELECT * FROM records WHERE kind = 'raw' AND device_id = ? AND ts BETWEEN ? AND ? "
                            "ORDER BY ts, seq LIMIT ?", [device_id, lo, hi, limit])


class RegressionRepository:
    """``regression_cases`` (insert once, read, mark sensitive: never delete) and ``release_checks``."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def case_keys(self) -> set[str]:
        """The ``source_key`` of every case (an alert or a miss report is captured once)."""
        return {str(r[0]) for r in self.b.execute("SELECT source_key FROM regression_cases").fetchall()}

    def insert_case(self, row: Mapping[str, Any]) -> int | None:
        """Insert a case; its id, or None when a case with its ``source_key`` exists (another
        process may have captured it meanwhile)."""
        got = self.b.execute(_insert_sql("regression_cases", list(row), " ON CONFLICT DO NOTHING RETURNING id"),
                             list(row.values())).fetchone()
        return None if got is None else int(got[0])

    def cases(self) -> list[dict[str, Any]]:
        """Every case row, oldest first."""
        return self.b.query("SELECT * FROM regression_cases ORDER BY id")

    def case(self, case_id: int) -> dict[str, Any] | None:
        rows = self.b.query("SELECT * FROM regression_cases WHERE id = ?", [case_id])
        return rows[0] if rows else None

    def mark_sensitive(self, case_id: int, reason: str) -> None:
        """Set the case sensitive with ``reason`` as its whole sensitive_reason."""
        with self.b.transaction():
            self.b.execute("UPDATE regression_cases SET sensitive = 1, sensitive_reason = ? WHERE id = ?",
                           [reason, case_id])

    def insert_check(self, row: Mapping[str, Any]) -> int:
        """Store a release check's verdict; returns its id."""
        with self.b.transaction():
            return int(self.b.execute(_insert_sql("release_checks", list(row), " RETURNING id"),
                                      list(row.values())).fetchone()[0])

    def check(self, check_id: int) -> dict[str, Any] | None:
        rows = self.b.query("SELECT * FROM release_checks WHERE id = ?", [check_id])
        return rows[0] if rows else None

    def passed_check_id(self, name: str, version: str, sha256: str, detector_sha256: str | None = None) -> int | None:
        """The newest passed check of exactly this release; with ``detector_sha256``, one made
        with that detector config or with no config hash (a custom replayer)."""
        sql = ("SELECT id FROM release_checks WHERE passed = 1 AND candidate_name = ? AND candidate_version = ? "
               "AND COALESCE(candidate_sha256, '') = ?")
        args: list[Any] = [name, version, sha256]
        if detector_sha256 is not None:
            sql += " AND COALESCE(candidate_detector_sha256, '') IN ('', ?)"
            args.append(detector_sha256)
        row = self.b.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return None if row is None else int(row[0])
