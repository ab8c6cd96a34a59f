"""Owner feedback, personalisation and alert quality: their SQL, on either back end.

The tables belong to the ``cloud.store.alerts`` migration set (``alerts``, ``incidents``,
``feedback``, ``personalisation``); this repository holds every statement the feedback side
(``cloud.feedback``), the rules' view of personalisation (``cloud.rules.personal``) and the
quality report (``cloud.quality``) run on them, plus the two reads of ``records`` they need
(an individual's latest record, each individual's data-clock lag).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud.store.backend import Backend

FEEDBACK_COLUMNS = ("alert_id", "individual_id", "device_id", "action", "label", "ts", "model_version",
                    "received_at")
PERSONALISATION_COLUMNS = ("individual_id", "device_id", "metric", "action", "factor", "reason", "ts",
                           "command_sent_at", "direction", "threshold", "alert_id")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class FeedbackRepository:
    """``feedback``, ``personalisation``, the feedback side's reads and updates of ``alerts`` and
    ``incidents``, and the quality report's reads."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    # ------------------------------------------------------------------ alerts and incidents

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        """One alert row, or None."""
        rows = self.b.query("SELECT * FROM alerts WHERE alert_id = ?", [alert_id])
        return rows[0] if rows else None

    def set_alert_state(self, alert_id: str, state: str) -> None:
        self.b.execute("UPDATE alerts SET state = ? WHERE alert_id = ?", [state, alert_id])

    def mark_incident_answered(self, incident_id: str) -> None:
        """The owner answered: no more reminders for this incident."""
        self.b.execute("UPDATE incidents SET answered = 1 WHERE incident_id = ?", [incident_id])

    def unanswered_alerts(self, notified_before: float) -> list[dict[str, Any]]:
        """Alerts still 'notified' or 'delivered' that were notified at or before ``notified_before``
        (candidates for the implicit 'ignored' sweep), oldest notification first."""
        return self.b.query("SELECT * FROM alerts WHERE state IN ('notified', 'delivered') AND notified_at IS NOT "
                            "NULL AND notified_at <= ? ORDER BY notified_at, alert_id", [notified_before])

    def alerts_of(self, individual_id: str, limit: int, since: float | None = None) -> list[dict[str, Any]]:
        """An individual's latest ``limit`` alerts (with ``ts >= since`` when given), newest first."""
        if since is None:
            return self.b.query("SELECT * FROM alerts WHERE individual_id = ? ORDER BY ts DESC LIMIT ?",
                                [individual_id, limit])
        return self.b.query("SELECT * FROM alerts WHERE individual_id = ? AND ts >= ? ORDER BY ts DESC LIMIT ?",
                            [individual_id, since, limit])

    def alerts_between(self, since: float | None, until: float | None) -> list[dict[str, Any]]:
        """Alerts with ``since <= ts < until`` (either bound optional), oldest first."""
        where, args = [], []
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts < ?")
            args.append(until)
        sql = "SELECT * FROM alerts" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self.b.query(sql + " ORDER BY ts", args)

    # ------------------------------------------------------------------ feedback

    def add_feedback(self, alert_id: str, individual_id: str, device_id: str | None, action: str, label: str,
                     ts: float, model_version: str | None, received_at: float) -> int | None:
        """Store one feedback row; its id, or None if the same (alert, action, ts) is already stored."""
        row = self.b.execute(
            f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES ({_marks(len(FEEDBACK_COLUMNS))}) "
            "ON CONFLICT DO NOTHING RETURNING id",
            [alert_id, individual_id, device_id, action, label, ts, model_version, received_at]).fetchall()
        return int(row[0][0]) if row else None

    def has_later_verdict(self, alert_id: str, ts: float) -> bool:
        """Is there an explicit verdict on the alert with a feedback ts after ``ts``?"""
        return self.b.execute(
            "SELECT 1 FROM feedback WHERE alert_id = ? AND action IN ('confirm', 'dismiss', "
            "'normal_for_her') AND ts > ? LIMIT 1", [alert_id, ts]).fetchone() is not None

    def unconsumed_dismissals(self, individual_id: str, metrics: str, after: float,
                              until: float) -> list[dict[str, Any]]:
        """Dismissals not yet used for a personalisation, of the individual's alerts with this
        metric set that are still dismissed, with feedback ts in ``(after, until]``, oldest first:
        each the alert row plus ``fid``, the feedback id."""
        return self.b.query(
            "SELECT f.id AS fid, a.* FROM feedback f JOIN alerts a ON a.alert_id = f.alert_id "
            "WHERE f.individual_id = ? AND f.action = 'dismiss' AND f.consumed_by IS NULL "
            "AND a.metrics = ? AND a.state = 'dismissed' AND f.ts > ? AND f.ts <= ? ORDER BY f.ts",
            [individual_id, metrics, after, until])

    def consume(self, feedback_ids: Sequence[int], personalisation_id: int | None) -> None:
        """Mark feedback rows as used by a personalisation (None: used, but nothing came of it)."""
        if feedback_ids:
            self.b.execute(f"UPDATE feedback SET consumed_by = ? WHERE id IN ({_marks(len(feedback_ids))})",
                           [personalisation_id, *feedback_ids])

    def answers(self) -> list[tuple[str, str, float, float | None]]:
        """``(alert_id, action, ts, received_at)`` of every verdict and 'acted' feedback, by ts then id
        (the quality report's read)."""
        return [(r[0], r[1], r[2], r[3]) for r in self.b.execute(
            "SELECT alert_id, action, ts, received_at FROM feedback WHERE action IN "
            "('confirm', 'dismiss', 'normal_for_her', 'acted') ORDER BY ts, id").fetchall()]

    # ------------------------------------------------------------------ personalisation

    def add_personalisation(self, row: dict[str, Any]) -> int:
        """Insert one personalisation row (keys: ``PERSONALISATION_COLUMNS``); returns its id."""
        return int(self.b.execute(
            f"INSERT INTO personalisation ({', '.join(PERSONALISATION_COLUMNS)}) VALUES "
            f"({_marks(len(PERSONALISATION_COLUMNS))}) RETURNING id",
            [row.get(c) for c in PERSONALISATION_COLUMNS]).fetchall()[0][0])

    def claim_unsent(self, now: float) -> list[dict[str, Any]]:
        """Every personalisation row whose config command was not handed out yet, marked sent at
        ``now`` in the same statement (so two callers never hand one out twice), oldest first."""
        with self.b.transaction():  # query() does not commit on its own
            rows = self.b.query("UPDATE personalisation SET command_sent_at = ? WHERE command_sent_at IS NULL "
                                "RETURNING *", [now])
        return sorted(rows, key=lambda r: int(r["id"]))

    def personalisations(self, individual_id: str | None = None) -> list[dict[str, Any]]:
        """Personalisation rows (of one individual, or all), oldest first."""
        if individual_id is None:
            return self.b.query("SELECT * FROM personalisation ORDER BY id")
        return self.b.query("SELECT * FROM personalisation WHERE individual_id = ? ORDER BY id", [individual_id])

    def personal_thresholds(self, individual_id: str) -> dict[tuple[str, int], float]:
        """(metric, direction) -> the widest accepted deviation for one individual."""
        out: dict[tuple[str, int], float] = {}
        for r in self.b.execute("SELECT metric, direction, MAX(threshold) FROM personalisation WHERE "
                                "individual_id = ? AND threshold IS NOT NULL GROUP BY metric, direction",
                                [individual_id]).fetchall():
            out[(r[0], int(r[1] or 0))] = float(r[2])
        return out

    # ------------------------------------------------------------------ records

    def latest_record(self, individual_id: str) -> tuple[str, str] | None:
        """``(device_id, body JSON)`` of the individual's newest event record (else newest record)."""
        row = self.b.execute("SELECT device_id, body FROM records WHERE individual_id = ? ORDER BY "
                             "(kind = 'event') DESC, ts DESC LIMIT 1", [individual_id]).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def newest_record_lags(self) -> list[tuple[str, float | None]]:
        """``(individual_id, received_at - ts)`` of each individual's newest record(s) by ts."""
        return [(r[0], r[1]) for r in self.b.execute(
            "SELECT r.individual_id, r.received_at - r.ts FROM records r JOIN "
            "(SELECT individual_id, MAX(ts) AS ts FROM records GROUP BY individual_id) m "
            "ON r.individual_id = m.individual_id AND r.ts = m.ts").fetchall()]
