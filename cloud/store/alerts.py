"""Alerts (decisions), incidents and what the rules read with them: their SQL, on either back end.

The hot path decides a batch of events with a handful of statements: :meth:`AlertRepository.preload`
reads the slice of history the rules can ask about (each query on one of the ``alerts`` indexes),
the rules decide every event against it in memory (``cloud.rules.notify.decide``), and
:meth:`AlertRepository.save` writes the new alerts with one multi-row INSERT and the incidents
with one statement each kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud.rules.history import MemoryHistory, RecordSpan
from cloud.rules.policy import NotificationPolicy
from cloud.store.backend import Backend

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
    """``alerts``, ``incidents``, and the rules' reads of ``individual_prefs``,
    ``personalisation`` and ``records``."""

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
