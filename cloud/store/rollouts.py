"""Releases and staged rollouts: their tables, their SQL, on either back end.

``releases`` (which model version the fleet runs), ``rollouts`` (one state machine each, driven by
``cloud.releases.rollout.RolloutManager``), ``rollout_devices`` (each device's step),
``rollout_events`` (every transition, command, reply and timeout with its reason) and
``shadow_stats`` (devices' shadow agreement); plus what the rollout reads of other tables
(``release_checks``, ``devices``, ``alerts``, ``feedback``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.backend import Backend

# the name string and function names stay as they were in cloud.releases.rollout (existing files
# record them in _sqlite_migrations)
migrations = Migrations("edgeloop.cloud.releases")


@migrations()
def m001_releases_rollouts(db: Database) -> None:
    db.table("releases").create(
        {"name": str, "version": str, "sha256": str, "detector_config": str, "bundle_path": str,
         "status": str, "updated": float, "rollout_id": int},
        pk=("name", "version"),
    )
    db.table("rollouts").create(
        {"id": int, "model_name": str, "version": str, "sha256": str, "bundle_path": str,
         "detector_config": str, "current_version": str, "state": str, "stage_started": float,
         "canary_started": float, "created": float, "updated": float, "release_check_id": int,
         "reason": str, "last_metrics": str, "control_snapshot": str},
        pk="id",
    )
    db.table("rollout_devices").create(
        {"rollout_id": int, "device_id": str, "cohort": str, "state": str, "outstanding": str,
         "sent_at": float, "installed_at": float, "promoted_at": float, "updated": float,
         "detail": str, "attempts": int},
        pk=("rollout_id", "device_id"),
    )
    db.table("rollout_events").create(
        {"id": int, "rollout_id": int, "ts": float, "kind": str, "device_id": str,
         "from_state": str, "to_state": str, "reason": str, "data": str},
        pk="id",
    )
    db.table("rollout_events").create_index(["rollout_id", "id"])
    db.table("shadow_stats").create(
        {"rollout_id": int, "device_id": str, "windows": int, "agree": int, "updated": float},
        pk=("rollout_id", "device_id"),
    )


@migrations()
def m002_failed_step(db: Database) -> None:
    db.table("rollout_devices").add_column("failed_step", str)


RELEASE_COLUMNS = ("name", "version", "sha256", "detector_config", "bundle_path", "status", "updated",
                   "rollout_id")
ROLLOUT_COLUMNS = ("model_name", "version", "sha256", "bundle_path", "detector_config", "current_version",
                   "state", "stage_started", "canary_started", "created", "updated", "release_check_id",
                   "reason", "last_metrics", "control_snapshot")
DEVICE_COLUMNS = ("rollout_id", "device_id", "cohort", "state", "outstanding", "sent_at", "installed_at",
                  "promoted_at", "updated", "detail", "attempts", "failed_step")
EVENT_COLUMNS = ("rollout_id", "ts", "kind", "device_id", "from_state", "to_state", "reason", "data")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _set_clause(cols: Mapping[str, Any], allowed: Sequence[str], table: str) -> str:
    bad = set(cols) - set(allowed)
    if bad:
        raise ValueError(f"{table}: no column(s) {sorted(bad)}")
    return ", ".join(f"{c} = ?" for c in cols)


class RolloutRepository:
    """``releases``, ``rollouts``, ``rollout_devices``, ``rollout_events``, ``shadow_stats``, and
    the rollout's reads of ``release_checks``, ``devices``, ``alerts`` and ``feedback``."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    # ------------------------------------------------------------------ releases
    def save_release(self, row: Mapping[str, Any]) -> None:
        """Insert or replace the release ``(name, version)`` (every column of ``RELEASE_COLUMNS``)."""
        vals = [row[c] for c in RELEASE_COLUMNS]
        upd = ", ".join(f"{c} = excluded.{c}" for c in RELEASE_COLUMNS[2:])
        self.b.execute(f"INSERT INTO releases ({', '.join(RELEASE_COLUMNS)}) VALUES ({_marks(len(vals))}) "
                       f"ON CONFLICT (name, version) DO UPDATE SET {upd}", vals)

    def fleet_release(self, name: str) -> dict[str, Any] | None:
        """The newest release of ``name`` with status ``fleet`` (detector config as stored text)."""
        rows = self.b.query("SELECT * FROM releases WHERE name = ? AND status = 'fleet' "
                            "ORDER BY updated DESC LIMIT 1", [name])
        return rows[0] if rows else None

    def supersede_fleet(self, name: str, keep_version: str, now: float) -> None:
        """Mark every other ``fleet`` release of ``name`` superseded."""
        self.b.execute("UPDATE releases SET status = 'superseded', updated = ? WHERE name = ? "
                       "AND status = 'fleet' AND version != ?", [now, name, keep_version])

    # ------------------------------------------------------------------ rollouts
    def create_rollout(self, row: Mapping[str, Any]) -> int:
        """Insert a rollout (every column of ``ROLLOUT_COLUMNS``); returns its id."""
        vals = [row[c] for c in ROLLOUT_COLUMNS]
        return int(self.b.execute(f"INSERT INTO rollouts ({', '.join(ROLLOUT_COLUMNS)}) VALUES "
                                  f"({_marks(len(vals))}) RETURNING id", vals).fetchone()[0])

    def rollout(self, rollout_id: int) -> dict[str, Any] | None:
        rows = self.b.query("SELECT * FROM rollouts WHERE id = ?", [rollout_id])
        return rows[0] if rows else None

    def update_rollout(self, rollout_id: int, cols: Mapping[str, Any]) -> None:
        sets = _set_clause(cols, ROLLOUT_COLUMNS, "rollouts")
        self.b.execute(f"UPDATE rollouts SET {sets} WHERE id = ?", [*cols.values(), rollout_id])

    def rollout_ids(self, states: Sequence[str] | None = None) -> list[int]:
        """Ids of the rollouts (in one of ``states``, when given), oldest first."""
        if states:
            rows = self.b.execute(f"SELECT id FROM rollouts WHERE state IN ({_marks(len(states))}) ORDER BY id",
                                  list(states)).fetchall()
        else:
            rows = self.b.execute("SELECT id FROM rollouts ORDER BY id").fetchall()
        return [int(r[0]) for r in rows]

    def active_rollout_of(self, model_name: str, states: Sequence[str]) -> tuple[int, str] | None:
        """(id, version) of a rollout of ``model_name`` in one of ``states``, if any."""
        row = self.b.execute(f"SELECT id, version FROM rollouts WHERE model_name = ? AND state IN "
                             f"({_marks(len(states))})", [model_name, *states]).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def last_metrics(self, rollout_id: int) -> str | None:
        row = self.b.execute("SELECT last_metrics FROM rollouts WHERE id = ?", [rollout_id]).fetchone()
        return None if row is None else row[0]

    # ------------------------------------------------------------------ devices
    def add_devices(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert rollout devices (every column of ``DEVICE_COLUMNS``)."""
        self.b.executemany(f"INSERT INTO rollout_devices ({', '.join(DEVICE_COLUMNS)}) VALUES "
                           f"({_marks(len(DEVICE_COLUMNS))})", [[r[c] for c in DEVICE_COLUMNS] for r in rows])

    def devices(self, rollout_id: int) -> list[dict[str, Any]]:
        """The rollout's devices, by device id."""
        return self.b.query("SELECT * FROM rollout_devices WHERE rollout_id = ? ORDER BY device_id", [rollout_id])

    def update_device(self, rollout_id: int, device_id: str, cols: Mapping[str, Any]) -> None:
        sets = _set_clause(cols, DEVICE_COLUMNS, "rollout_devices")
        self.b.execute(f"UPDATE rollout_devices SET {sets} WHERE rollout_id = ? AND device_id = ?",
                       [*cols.values(), rollout_id, device_id])

    def device_rollout(self, device_id: str, states: Sequence[str], outstanding: str | None = None) -> int | None:
        """The newest rollout in one of ``states`` that ``device_id`` belongs to (with ``outstanding``:
        only where that command awaits the device's reply)."""
        cond = " AND d.outstanding = ?" if outstanding is not None else ""
        args: list[Any] = [device_id, *([outstanding] if outstanding is not None else []), *states]
        row = self.b.execute(
            "SELECT d.rollout_id FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id "
            f"WHERE d.device_id = ?{cond} AND r.state IN ({_marks(len(states))}) "
            "ORDER BY d.rollout_id DESC LIMIT 1", args).fetchone()
        return None if row is None else int(row[0])

    # ------------------------------------------------------------------ events
    def add_event(self, row: Mapping[str, Any]) -> None:
        """Append an event (every column of ``EVENT_COLUMNS``)."""
        self.b.execute(f"INSERT INTO rollout_events ({', '.join(EVENT_COLUMNS)}) VALUES "
                       f"({_marks(len(EVENT_COLUMNS))})", [row[c] for c in EVENT_COLUMNS])

    def events(self, rollout_id: int, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` events of the rollout, oldest first."""
        return self.b.query("SELECT * FROM (SELECT * FROM rollout_events WHERE rollout_id = ? ORDER BY id DESC "
                            "LIMIT ?) AS e ORDER BY id", [rollout_id, limit])

    def transitions(self, rollout_id: int) -> list[dict[str, Any]]:
        return self.b.query("SELECT * FROM rollout_events WHERE rollout_id = ? AND kind = 'transition' ORDER BY id",
                            [rollout_id])

    # ------------------------------------------------------------------ shadow stats
    def save_shadow_stats(self, rollout_id: int, device_id: str, windows: int, agree: int, now: float) -> None:
        self.b.execute("INSERT INTO shadow_stats (rollout_id, device_id, windows, agree, updated) VALUES "
                       "(?, ?, ?, ?, ?) ON CONFLICT (rollout_id, device_id) DO UPDATE SET "
                       "windows = excluded.windows, agree = excluded.agree, updated = excluded.updated",
                       [rollout_id, device_id, windows, agree, now])

    def shadow_totals(self, rollout_id: int) -> tuple[int, int]:
        """(windows, agreeing windows) summed over the rollout's devices."""
        row = self.b.execute("SELECT COALESCE(SUM(windows), 0), COALESCE(SUM(agree), 0) FROM shadow_stats "
                             "WHERE rollout_id = ?", [rollout_id]).fetchone()
        return int(row[0]), int(row[1])

    # ------------------------------------------------------------------ reads of other tables
    def check_current_version(self, check_id: int) -> str | None:
        """The fleet version a release check compared its candidate with."""
        row = self.b.execute("SELECT current_version FROM release_checks WHERE id = ?", [check_id]).fetchone()
        return None if row is None else row[0]

    def device_ids(self) -> list[str]:
        """Every device the cloud has seen a status from."""
        return [str(r[0]) for r in self.b.execute("SELECT device_id FROM devices ORDER BY device_id").fetchall()]

    def alerts_between(self, lo: float, hi: float) -> list[dict[str, Any]]:
        """Alerts with ``lo <= ts <= hi`` (what group metrics need of them), oldest first."""
        return self.b.query("SELECT alert_id, device_id, ts, action, notified_at FROM alerts "
                            "WHERE ts >= ? AND ts <= ? ORDER BY ts, alert_id", [lo, hi])

    def feedback_between(self, lo: float, hi: float) -> list[dict[str, Any]]:
        """Feedback with ``lo <= ts <= hi``, in order (ts, id)."""
        return self.b.query("SELECT alert_id, action, label FROM feedback WHERE ts <= ? AND ts >= ? "
                            "ORDER BY ts, id", [hi, lo])
