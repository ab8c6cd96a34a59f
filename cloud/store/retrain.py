"""Retraining requests and the evaluation log, and the reads retraining does of releases, alerts
and records: their SQL, on either back end.

``retrain_requests`` and ``retrain_evaluations`` are created by the ``edgeloop.cloud.retrain``
migration set below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.backend import Backend

migrations = Migrations("edgeloop.cloud.retrain")


@migrations()
def m001_retrain(db: Database) -> None:
    db.table("retrain_requests").create(
        {"id": int, "model_name": str, "model_version": str, "rule": str, "kind": str,
         "reason": str, "measured": str, "created": float, "dataset_path": str, "status": str},
        pk="id",
    )
    db.table("retrain_requests").create_index(["model_name", "model_version", "rule", "created"])
    db.table("retrain_evaluations").create(
        {"id": int, "ts": float, "rule": str, "model_name": str, "model_version": str,
         "outcome": str, "reason": str, "measured": str, "request_id": int},
        pk="id",
    )


_EVAL_COLUMNS = ("ts", "rule", "model_name", "model_version", "outcome", "reason", "measured", "request_id")


class RetrainRepository:
    """``retrain_requests``, ``retrain_evaluations``; reads of ``releases``, ``alerts`` and ``records``."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    # ------------------------------------------------------------------ model versions

    def fleet_version(self, model_name: str) -> Any:
        """The version of the model's latest release that reached the whole fleet, or None."""
        row = self.b.execute("SELECT version FROM releases WHERE name = ? AND status = 'fleet' "
                             "ORDER BY updated DESC LIMIT 1", [model_name]).fetchone()
        return None if row is None else row[0]

    def newest_alert_version(self, until: float) -> Any:
        """The model version on the newest alert with ``ts <= until`` that names one, or None."""
        row = self.b.execute("SELECT model_version FROM alerts WHERE ts <= ? AND model_version IS NOT NULL "
                             "AND model_version != '' ORDER BY ts DESC LIMIT 1", [until]).fetchone()
        return None if row is None else row[0]

    def release_sha256(self, model_name: str, version: str) -> str | None:
        """The model sha256 of a registered release (None: no such release, or no hash)."""
        row = self.b.execute("SELECT sha256 FROM releases WHERE name = ? AND version = ?",
                             [model_name, version]).fetchone()
        return row[0] if row is not None and row[0] else None

    def other_releases_with_sha256(self, model_name: str, sha256: str, version: str) -> int:
        """How many other releases of the model ship the same model file."""
        return int(self.b.execute("SELECT COUNT(*) FROM releases WHERE name = ? AND sha256 = ? AND version != ?",
                                  [model_name, sha256, version]).fetchone()[0])

    # ------------------------------------------------------------------ records

    def summaries(self, lo: float, hi: float) -> list[dict[str, Any]]:
        """``ts`` and ``body`` (JSON text) of every summary record with ``lo <= ts <= hi``."""
        return self.b.query("SELECT ts, body FROM records WHERE kind = 'summary' AND ts >= ? AND ts <= ?", [lo, hi])

    def events(self) -> list[dict[str, Any]]:
        """``device_id``, ``incarnation``, ``seq`` and ``body`` (JSON text) of every event record."""
        return self.b.query("SELECT device_id, incarnation, seq, body FROM records WHERE kind = 'event'")

    # ------------------------------------------------------------------ requests and evaluations

    def last_request(self, rule: str, model_name: str, model_version: str) -> float | None:
        """When the rule last requested retraining of this model version (None: never)."""
        row = self.b.execute("SELECT MAX(created) FROM retrain_requests WHERE rule = ? AND model_name = ? "
                             "AND model_version = ?", [rule, model_name, model_version]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def add_evaluation(self, row: Mapping[str, Any]) -> None:
        """Log one evaluation (``ts``, ``rule``, ``model_name``, ``model_version``, ``outcome``,
        ``reason``, ``measured`` as JSON text, ``request_id``)."""
        with self.b.transaction():
            self.b.execute(f"INSERT INTO retrain_evaluations ({', '.join(_EVAL_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(_EVAL_COLUMNS))})", [row.get(c) for c in _EVAL_COLUMNS])

    def add_request(self, row: Mapping[str, Any], evaluation: Mapping[str, Any]) -> int:
        """Record a request and its ``fired`` evaluation (given its ``request_id`` here) in one
        transaction; returns the request id."""
        with self.b.transaction():
            rid = int(self.b.execute(f"INSERT INTO retrain_requests ({', '.join(row)}) VALUES "
                                     f"({', '.join('?' * len(row))}) RETURNING id", list(row.values())).fetchone()[0])
            self.add_evaluation({**evaluation, "request_id": rid})
        return rid

    def requests(self) -> list[dict[str, Any]]:
        """Every request row, oldest first (``measured`` is JSON text)."""
        return self.b.query("SELECT * FROM retrain_requests ORDER BY id")

    def evaluations(self, rule: str | None = None) -> list[dict[str, Any]]:
        """The evaluation log (of one rule, when given), oldest first (``measured`` is JSON text)."""
        if rule:
            return self.b.query("SELECT * FROM retrain_evaluations WHERE rule = ? ORDER BY id", [rule])
        return self.b.query("SELECT * FROM retrain_evaluations ORDER BY id")
