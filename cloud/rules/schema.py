"""Tables of the notification / feedback loop, in their own named ``Migrations`` set.

The retraining engineer reads ``alerts``, ``incidents``, ``feedback`` and ``personalisation``;
keep their columns (add new ones only in new migrations).

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
"""

from __future__ import annotations

import weakref

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.db import write_lock  # noqa: F401 - re-exported for the rules and feedback

migrations = Migrations("edgeloop.cloud.rules")
_READY: weakref.WeakSet[Database] = weakref.WeakSet()


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


def ensure_schema(db: Database) -> None:
    """Apply this set's pending migrations once per Database object (cheap after the first)."""
    if not isinstance(db, Database) or db in _READY:  # PostgreSQL: the schema registry did
        return
    if not migrations.pending(db):
        _READY.add(db)
        return
    with write_lock(db):  # two processes migrating at once must queue, not deadlock
        migrations.apply(db)
    _READY.add(db)
