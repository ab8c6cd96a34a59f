"""Alerts (decisions), incidents and what the rules read with them: their SQL, on either back end.

The tables of the notification / feedback loop are created by this module's ``Migrations`` set
(its name string, "edgeloop.cloud.rules", and its functions' names are those of the SQLite files
already written; it lived in ``cloud.rules.schema``). The retraining engineer reads ``alerts``,
``incidents``, ``feedback`` and ``personalisation``; keep their columns (add new ones only in new
migrations).

- ``alerts``: one row per event record the rules decided on (``alert_id`` =
  ``device_id:incarnation:seq``, or ``device_id:seq`` for a record of a v1 device; the columns
  ``device_id``, ``incarnation``, ``seq`` name the record).
  ``state`` moves: held | suppressed | deferred | collecting | notified -> delivered -> opened
  -> acted, and the explicit verdicts confirmed | dismissed | normal_for_her, or ignored.
- ``incidents``: alerts for one individual grouped while the incident is open.
- ``feedback``: explicit and implicit answers, one row each, with the alert's model version.
- ``personalisation``: per-individual, per-metric threshold changes and whether the config
  command carrying them was handed out (``command_sent_at``).
- ``individual_prefs``: timezone offset, silence, quiet hours per individual (owner settings).

The hot path decides a batch of events with a handful of statements: :meth:`AlertRepository.preload`
reads the slice of history the rules can ask about (each query on one of the ``alerts`` indexes),
the rules decide every event against it in memory (``cloud.rules.notify.decide``), and
:meth:`AlertRepository.save` writes the new alerts with one multi-row INSERT and the incidents
with one statement each kind.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.rules.history import MemoryHistory, RecordSpan
from cloud.rules.policy import NotificationPolicy
from cloud.store.backend import Backend

migrations = Migrations("edgeloop.cloud.rules")


@migrations()
def m001_alerts_incidents_feedback(db: Database) -> None:
    db.table("alerts").create(
        {"alert_id": str, "device_id": str, "seq": int, "individual_id": str, "ts": float,
         "start_ts": float, "action": str, "reason": str, "rule": str, "incident_id": str,
         "severity": str, "metrics": str, "score": float, "model_version": str,
         "detector_version": str, "notified_at": float, "state": str, "decided_at": float,
         "directions": str, "baseline": str, "observed": str},
        pk="alert_id",
    )
    db.table("alerts").create_index(["individual_id", "ts"])
    db.table("alerts").create_index(["model_version", "ts"])
    db.table("alerts").create_index(["state", "notified_at"])
    db.table("incidents").create(
        {"incident_id": str, "individual_id": str, "opened_at": float, "last_alert_at": float,
         "closed_at": float, "severity": str, "notify_count": int, "last_notified_at": float,
         "answered": int, "first_alert_id": str, "last_alert_id": str, "alert_count": int},
        pk="incident_id",
    )
    db.table("incidents").create_index(["individual_id", "closed_at"])
    db.table("feedback").create(
        {"id": int, "alert_id": str, "individual_id": str, "device_id": str, "action": str,
         "label": str, "ts": float, "model_version": str, "received_at": float,
         "consumed_by": int},
        pk="id",
    )
    db.table("feedback").create_index(["alert_id", "action", "ts"], unique=True)
    db.table("feedback").create_index(["individual_id", "action", "ts"])
    db.table("personalisation").create(
        {"id": int, "individual_id": str, "device_id": str, "metric": str, "action": str,
         "factor": float, "reason": str, "ts": float, "command_sent_at": float,
         "direction": int, "threshold": float, "alert_id": str},
        pk="id",
    )
    db.table("personalisation").create_index(["individual_id", "metric"])
    db.table("individual_prefs").create(
        {"individual_id": str, "tz_offset_h": float, "silenced_until": float,
         "quiet_start": str, "quiet_end": str},
        pk="individual_id",
    )


@migrations()
def m002_decision_indexes(db: Database) -> None:
    """Indexes for the per-event queries (duplicate, cooldown, collecting) at fleet scale."""
    db.table("alerts").create_index(["device_id", "start_ts"])
    db.table("alerts").create_index(["individual_id", "notified_at"])
    db.table("alerts").create_index(["device_id", "action", "decided_at"])
    db.table("feedback").create_index(["consumed_by"])


@migrations()
def m003_alert_incarnation(db: Database) -> None:
    """An alert names its record by (device_id, incarnation, seq)."""
    db.table("alerts").add_column("incarnation", str, not_null_default="")


ALERT_COLUMNS = ("alert_id", "device_id", "incarnation", "seq", "individual_id", "ts", "start_ts", "action",
                 "reason", "rule", "incident_id", "severity", "metrics", "score", "model_version",
                 "detector_version", "notified_at", "state", "decided_at", "directions", "baseline", "observed")
ALERT_TYPES = tuple("bigint" if c == "seq" else "float8" if c in (
    "ts", "start_ts", "score", "notified_at", "decided_at") else "text" for c in ALERT_COLUMNS)
INCIDENT_COLUMNS = ("incident_id", "individual_id", "opened_at", "last_alert_at", "closed_at", "severity",
                    "notify_count", "last_notified_at", "answered", "first_alert_id", "last_alert_id",
                    "alert_count")
_HISTORY = "alert_id, device_id, individual_id, ts, start_ts, action, severity, metrics, notified_at, decided_at"


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class AlertRepository:
    """``alerts``, ``incidents``, the owner settings (``individual_prefs``), and the rules' reads of
    ``personalisation`` and ``records`` (record spans, a collection's raw windows): the rules'
    ``AlertStore`` (``cloud.rules.history``)."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def preload(self, policy: NotificationPolicy, items: Sequence[tuple[str, str, float, float, float]],
                pairs: Sequence[tuple[str, str]] = ()) -> MemoryHistory:
        """The history a batch of events needs: ``items`` are (device id, individual id, onset,
        decision time, record ts); ``pairs`` the (device, incarnation) whose record span to load
        up front. Loads every alert a condition could match (by individual in the cooldown
        and recent-alerts windows, by device in the collect window or with one of these onsets),
        the individuals' open incidents, owner settings and personal thresholds."""
        s = policy.settings
        devices = sorted({i[0] for i in items})
        inds = sorted({i[1] for i in items})
        onsets = sorted({i[2] for i in items})
        t_min = min(i[3] for i in items)
        recent = max((r.when.recent_window_s for r in policy.rules if r.when.recent_alerts_at_least is not None),
                     default=0.0)
        # recent_alerts counts alerts by ts in (record ts - window, record ts]
        lo_ts = min(i[4] for i in items) - recent if recent else None
        di, ii, oi = _marks(len(devices)), _marks(len(inds)), _marks(len(onsets))
        parts = [f"SELECT {_HISTORY} FROM alerts WHERE individual_id IN ({ii}) AND notified_at > ?",
                 f"SELECT {_HISTORY} FROM alerts WHERE device_id IN ({di}) AND action = 'collect_more' "
                 "AND decided_at > ?",
                 f"SELECT {_HISTORY} FROM alerts WHERE device_id IN ({di}) AND start_ts IN ({oi})"]
        args: list[Any] = [*inds, t_min - s.cooldown_s, *devices, t_min - s.collect_duration_s, *devices, *onsets]
        if lo_ts is not None:
            parts.append(f"SELECT {_HISTORY} FROM alerts WHERE individual_id IN ({ii}) AND ts > ?")
            args += [*inds, lo_ts]
        alerts = self.b.query(" UNION ".join(parts), args)
        incidents = self.b.query(f"SELECT * FROM incidents WHERE individual_id IN ({ii}) AND closed_at IS NULL",
                                 inds)
        prefs = {r["individual_id"]: r for r in self.b.query(
            f"SELECT * FROM individual_prefs WHERE individual_id IN ({ii})", inds)}
        thresholds: dict[str, dict[tuple[str, int], float]] = {}
        for r in self.b.execute(
                f"SELECT individual_id, metric, direction, MAX(threshold) FROM personalisation WHERE individual_id "
                f"IN ({ii}) AND threshold IS NOT NULL GROUP BY individual_id, metric, direction", inds).fetchall():
            thresholds.setdefault(r[0], {})[(r[1], int(r[2] or 0))] = float(r[3])
        return MemoryHistory(alerts, incidents, prefs, thresholds, spans=self.record_spans(pairs),
                             span_loader=self.record_span)

    def record_spans(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], RecordSpan]:
        """:meth:`record_span` of many (device, incarnation) pairs in one statement."""
        out: dict[tuple[str, str], RecordSpan] = {}
        for i in range(0, len(pairs), 400):
            part = pairs[i:i + 400]
            keys = " UNION ALL ".join(["SELECT ? AS d, ? AS i"] * len(part))
            for d, inc, first, last in self.b.execute(
                    f"SELECT k.d, k.i, (SELECT ts FROM records WHERE device_id = k.d AND incarnation = k.i "
                    f"ORDER BY seq LIMIT 1), (SELECT ts FROM records WHERE device_id = k.d AND incarnation = k.i "
                    f"ORDER BY seq DESC LIMIT 1) FROM ({keys}) AS k", [v for p in part for v in p]).fetchall():
                out[(d, inc)] = (first, last)
        return out

    def record_span(self, device_id: str, incarnation: str) -> RecordSpan:
        """ts of the (device, incarnation)'s first and newest record by seq (two index lookups)."""
        first = self.b.execute("SELECT ts FROM records WHERE device_id = ? AND incarnation = ? ORDER BY seq LIMIT 1",
                               [device_id, incarnation]).fetchone()
        last = self.b.execute("SELECT ts FROM records WHERE device_id = ? AND incarnation = ? "
                              "ORDER BY seq DESC LIMIT 1", [device_id, incarnation]).fetchone()
        return (None if first is None else first[0], None if last is None else last[0])

    def save(self, history: MemoryHistory) -> None:
        """Write what the decisions added to ``history`` (in the caller's transaction)."""
        self.b.insert_many("alerts", ALERT_COLUMNS, ALERT_TYPES,
                           [[r.get(c) for c in ALERT_COLUMNS] for r in history.new_alerts])
        new = [history.incidents[i] for i in history.new_incidents]
        if new:
            self.b.executemany(f"INSERT INTO incidents ({', '.join(INCIDENT_COLUMNS)}) VALUES "
                               f"({_marks(len(INCIDENT_COLUMNS))})", [[r.get(c) for c in INCIDENT_COLUMNS] for r in new])
        changed = [(i, history.incidents[i]) for i in history.changed_incidents]
        if changed:
            cols = INCIDENT_COLUMNS[1:]
            self.b.executemany(f"UPDATE incidents SET {', '.join(f'{c} = ?' for c in cols)} WHERE incident_id = ?",
                               [[r.get(c) for c in cols] + [i] for i, r in changed])

    # ---- transactions (the rules' store protocol, cloud.rules.history.AlertStore)
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The store's write transaction (SQLite: its write lock; nested: a savepoint)."""
        return self.b.transaction()

    def lock_keys(self, keys: Iterable[str]) -> None:
        self.b.lock_keys(keys)

    # ---- alerts
    def alert(self, alert_id: str) -> dict[str, Any] | None:
        rows = self.b.query("SELECT * FROM alerts WHERE alert_id = ?", [alert_id])
        return rows[0] if rows else None

    def update_alert(self, alert_id: str, changes: Mapping[str, Any]) -> None:
        cols = _known(changes, ALERT_COLUMNS)
        self.b.execute(f"UPDATE alerts SET {', '.join(f'{c} = ?' for c in cols)} WHERE alert_id = ?",
                       [*(changes[c] for c in cols), alert_id])

    def event_body(self, alert_id: str) -> dict[str, Any]:
        """The stored event body behind an alert; {} if the record is gone."""
        row = self.b.execute(
            "SELECT r.body FROM alerts a JOIN records r ON r.device_id = a.device_id "
            "AND r.incarnation = a.incarnation AND r.seq = a.seq WHERE a.alert_id = ?", [alert_id]).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def notify_deferred(self, incident_id: str, t: float) -> None:
        """The incident's deferred alerts are notified at ``t``."""
        self.b.execute("UPDATE alerts SET state = 'notified', notified_at = ? "
                       "WHERE incident_id = ? AND state = 'deferred'", [t, incident_id])

    def collecting_due(self, decided_before: float) -> list[dict[str, Any]]:
        """Alerts still collecting that were decided at or before ``decided_before``, oldest first."""
        return self.b.query("SELECT * FROM alerts WHERE state = 'collecting' AND decided_at <= ? "
                            "ORDER BY decided_at", [decided_before])

    # ---- the records a collect_more asked for (cloud.rules.followup)
    def first_raw(self, device_id: str, since: float) -> float | None:
        """ts of the device's first raw window at or after ``since`` (None: none yet)."""
        first = self.b.execute("SELECT MIN(ts) FROM records WHERE kind = 'raw' AND device_id = ? AND ts >= ?",
                               [device_id, since]).fetchone()[0]
        return None if first is None else float(first)

    def raw_bodies(self, device_id: str, lo: float, hi: float, limit: int) -> list[str]:
        """The JSON bodies of the device's raw windows with ts in [lo, hi], by ts (at most ``limit``)."""
        return [str(r[0]) for r in self.b.execute(
            "SELECT body FROM records WHERE kind = 'raw' AND device_id = ? AND ts >= ? AND ts <= ? ORDER BY ts LIMIT ?",
            [device_id, lo, hi, limit]).fetchall()]

    # ---- incidents
    def open_incidents(self, individual_id: str | None = None) -> list[dict[str, Any]]:
        """Open incidents (of one individual, or all), newest (by opened_at) first."""
        if individual_id is None:
            return self.b.query("SELECT * FROM incidents WHERE closed_at IS NULL ORDER BY opened_at DESC")
        return self.b.query("SELECT * FROM incidents WHERE individual_id = ? AND closed_at IS NULL "
                            "ORDER BY opened_at DESC", [individual_id])

    def unanswered_incidents(self) -> list[dict[str, Any]]:
        """Open incidents nobody answered, oldest (by opened_at) first."""
        return self.b.query("SELECT * FROM incidents WHERE closed_at IS NULL AND answered = 0 ORDER BY opened_at")

    def add_incident(self, row: Mapping[str, Any]) -> None:
        self.b.execute(f"INSERT INTO incidents ({', '.join(INCIDENT_COLUMNS)}) VALUES "
                       f"({_marks(len(INCIDENT_COLUMNS))})", [row.get(c) for c in INCIDENT_COLUMNS])

    def update_incident(self, incident_id: str, changes: Mapping[str, Any]) -> None:
        cols = _known(changes, INCIDENT_COLUMNS)
        self.b.execute(f"UPDATE incidents SET {', '.join(f'{c} = ?' for c in cols)} WHERE incident_id = ?",
                       [*(changes[c] for c in cols), incident_id])

    def close_incident(self, incident_id: str, t: float) -> None:
        self.b.execute("UPDATE incidents SET closed_at = ? WHERE incident_id = ? AND closed_at IS NULL",
                       [t, incident_id])

    # ---- owner settings
    def prefs(self, individual_id: str) -> dict[str, Any]:
        """The individual's ``individual_prefs`` row ({} if none)."""
        rows = self.b.query("SELECT * FROM individual_prefs WHERE individual_id = ?", [individual_id])
        return rows[0] if rows else {}

    def set_prefs(self, individual_id: str, values: Mapping[str, Any]) -> None:
        """Insert the individual's settings, or change only the ones given."""
        cols = _known(values, PREFS_COLUMNS[1:])
        conflict = (f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}" if cols else "DO NOTHING")
        self.b.execute(f"INSERT INTO individual_prefs (individual_id{''.join(f', {c}' for c in cols)}) VALUES "
                       f"({_marks(len(cols) + 1)}) ON CONFLICT (individual_id) {conflict}",
                       [individual_id, *(values[c] for c in cols)])


PREFS_COLUMNS = ("individual_id", "tz_offset_h", "silenced_until", "quiet_start", "quiet_end")


def _known(changes: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    """The changed columns, each checked against the table's (they are written into the SQL)."""
    unknown = set(changes) - set(columns)
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    return list(changes)
