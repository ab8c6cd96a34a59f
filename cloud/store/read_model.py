"""Every query the dashboard, the metrics and the Home Assistant bridge make, on either back end.

The web server's threads never share the aggregator's connection: :class:`StoreReader` opens the
store for each request, read-only on SQLite (WAL lets readers run beside the writer), from one
small pool on PostgreSQL. Tables a store has not created yet (an older file opened read-only)
read as empty.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloud.store.backend import (
    Backend,
    PostgresBackend,
    SqliteBackend,
    parse_store_url,
    where_equal,
)

_MISSING = ("no such table", "no such column", "does not exist")  # SQLite's and PostgreSQL's words


def _json(text: Any, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except (TypeError, ValueError):
        return default


class StoreReader:
    """Read access to the store a ``--db`` value names, for threads other than the aggregator's."""

    def __init__(self, url: str) -> None:
        self.url = parse_store_url(url)
        self._pg: PostgresBackend | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadModel]:
        if self.url.dialect == "sqlite":
            if not self.url.path:
                raise FileNotFoundError("the store is in memory: nothing to read from another connection")
            conn = sqlite3.connect(f"file:{Path(self.url.path).resolve()}?mode=ro", uri=True, timeout=5.0,
                                   check_same_thread=False)
            try:
                yield ReadModel(SqliteBackend(conn))
            finally:
                conn.close()
            return
        with self._lock:
            if self._pg is None:
                self._pg = PostgresBackend(self.url.target, max_size=2)
        yield ReadModel(self._pg)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()


class ReadModel:
    """The read-only queries, over one back end."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def _rows(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        try:
            return self.b.query(sql, args)
        except Exception as exc:
            if any(m in str(exc) for m in _MISSING):
                return []
            raise

    # ---- counts for /metrics ----------------------------------------------------------------------
    def _counts(self, sql: str, key: str) -> dict[str, int]:
        return {r[key]: int(r["n"]) for r in self._rows(sql)}

    def devices_by_state(self) -> dict[str, int]:
        return self._counts("SELECT state, COUNT(*) AS n FROM devices GROUP BY state", "state")

    def rollouts_by_state(self) -> dict[str, int]:
        return self._counts("SELECT state, COUNT(*) AS n FROM rollouts GROUP BY state", "state")

    def feedback_by_action(self) -> dict[str, int]:
        return self._counts("SELECT action, COUNT(*) AS n FROM feedback GROUP BY action", "action")

    def deliveries_by_state(self) -> dict[tuple[str, str], int]:
        return {(r["channel"], r["state"]): int(r["n"]) for r in self._rows(
            "SELECT channel, state, COUNT(*) AS n FROM deliveries GROUP BY channel, state")}

    def alerts_by_action(self) -> dict[str, int]:
        return self._counts("SELECT action, COUNT(*) AS n FROM alerts GROUP BY action", "action")

    def retrain_requests_open(self) -> int:
        rows = self._rows("SELECT COUNT(*) AS n FROM retrain_requests WHERE status IN ('open', 'new', '')")
        return int(rows[0]["n"]) if rows else 0

    # ---- the dashboard ----------------------------------------------------------------------------
    def fleet(self) -> list[dict[str, Any]]:
        """One row per device: its retained status, last seen, individuals, and what its newest
        daily summary reported (agent and model versions, outbox backlog, rejected frames, battery)."""
        devices = {r["device_id"]: r for r in self._rows("SELECT device_id, state, last_seen, status_ts FROM devices")}
        seen = {r["device_id"]: r for r in self._rows(
            "SELECT device_id, MAX(received_at) AS last_record, COUNT(*) AS records FROM records GROUP BY device_id")}
        names: dict[str, list[str]] = {}
        for r in self._rows("SELECT DISTINCT device_id, individual_id FROM records"):
            names.setdefault(r["device_id"], []).append(r["individual_id"])
        latest = {r["device_id"]: r for r in self._rows(
            "SELECT r.device_id, r.ts, r.body FROM records r JOIN (SELECT device_id, MAX(ts) AS ts FROM records "
            "WHERE kind = 'summary' GROUP BY device_id) m ON r.device_id = m.device_id AND r.ts = m.ts "
            "WHERE r.kind = 'summary'")}
        out = []
        for dev in sorted(set(devices) | set(seen)):
            d, s, last = devices.get(dev, {}), seen.get(dev, {}), latest.get(dev)
            body = _json(last["body"], {}) if last else {}
            ingest = body.get("ingest") or {}
            backlog = body.get("backlog") or {}
            out.append({
                "device_id": dev, "state": d.get("state") or "unknown",
                "last_seen": max(x for x in (d.get("last_seen"), s.get("last_record"), 0.0) if x is not None) or None,
                "individuals": sorted(filter(None, names.get(dev, []))),
                "records": s.get("records", 0), "summary_ts": last["ts"] if last else None,
                "agent_version": body.get("agent_version"), "model_version": body.get("model_version"),
                "detector_version": body.get("detector_version"),
                "backlog_rows": backlog.get("rows"), "backlog_bytes": backlog.get("bytes"),
                "frames_rejected": sum(int(ingest.get(k, 0) or 0) for k in
                                       ("crc_errors", "bad_length", "bad_version", "payload_rejected"))
                if ingest else None,
                "bytes_rejected": ingest.get("bytes_rejected"), "battery": body.get("battery"),
            })
        return out

    def totals(self) -> dict[str, Any]:
        one = self._rows("SELECT COUNT(*) AS records, MAX(received_at) AS last_received FROM records")
        rej = self._rows("SELECT COUNT(*) AS n FROM rejections")
        return {**(one[0] if one else {"records": 0, "last_received": None}),
                "rejections": rej[0]["n"] if rej else 0, "alerts": self.alerts_by_action()}

    def incidents(self, limit: int = 100, individual_id: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE individual_id = ?", [individual_id]) if individual_id else ("", [])
        return self._rows(f"SELECT * FROM incidents {where} ORDER BY COALESCE(last_alert_at, opened_at) DESC "
                          "LIMIT ?", [*args, limit])

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM incidents WHERE incident_id = ?", [incident_id])
        return rows[0] if rows else None

    def alerts(self, *, incident_id: str | None = None, individual_id: str | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
        where, args = where_equal(incident_id=incident_id, individual_id=individual_id)
        out = self._rows(f"SELECT * FROM alerts{where} ORDER BY ts DESC LIMIT ?", [*args, limit])
        for a in out:
            a["metrics"] = _json(a.get("metrics"), a.get("metrics"))
        return out

    def all_alerts(self) -> list[dict[str, Any]]:
        """Every decision, oldest first (the demo's report)."""
        return self._rows("SELECT * FROM alerts ORDER BY decided_at, alert_id")

    def feedback(self, *, alert_ids: list[str] | None = None, individual_id: str | None = None,
                 limit: int = 500) -> list[dict[str, Any]]:
        if alert_ids is not None:
            if not alert_ids:
                return []
            marks = ",".join("?" * len(alert_ids))
            return self._rows(f"SELECT * FROM feedback WHERE alert_id IN ({marks}) ORDER BY ts", alert_ids)
        if individual_id:
            return self._rows("SELECT * FROM feedback WHERE individual_id = ? ORDER BY ts LIMIT ?",
                              [individual_id, limit])
        return self._rows("SELECT * FROM feedback ORDER BY id DESC LIMIT ?", [limit])

    def deliveries(self, *, alert_ids: list[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if alert_ids is not None:
            if not alert_ids:
                return []
            marks = ",".join("?" * len(alert_ids))
            return self._rows("SELECT id, alert_id, channel, kind, state, attempts, last_error, created_at, "
                              f"updated_at, next_attempt_at FROM deliveries WHERE alert_id IN ({marks}) ORDER BY id",
                              alert_ids)
        return self._rows("SELECT id, alert_id, individual_id, channel, kind, state, attempts, last_error, "
                          "created_at, updated_at, next_attempt_at FROM deliveries ORDER BY id DESC LIMIT ?", [limit])

    def individuals(self) -> list[str]:
        return [r["individual_id"] for r in self._rows("SELECT DISTINCT individual_id FROM records ORDER BY 1")]

    def summaries(self, individual_id: str, limit_days: int = 120) -> list[dict[str, Any]]:
        rows = self._rows("SELECT device_id, ts, body FROM records WHERE kind = 'summary' AND individual_id = ? "
                          "ORDER BY ts DESC LIMIT ?", [individual_id, limit_days])
        return [{**r, "body": _json(r["body"], {})} for r in reversed(rows)]

    def events(self, individual_id: str, limit: int = 500) -> list[dict[str, Any]]:
        rows = self._rows("SELECT device_id, seq, ts, body FROM records WHERE kind = 'event' AND individual_id = ? "
                          "ORDER BY ts DESC LIMIT ?", [individual_id, limit])
        out = []
        for r in reversed(rows):
            body = _json(r["body"], {})
            body.pop("trace", None)
            out.append({"device_id": r["device_id"], "seq": r["seq"], "ts": r["ts"], **body})
        return out

    def releases(self) -> list[dict[str, Any]]:
        return self._rows("SELECT name, version, sha256, status, updated, rollout_id FROM releases "
                          "ORDER BY updated DESC")

    def rollouts(self) -> list[dict[str, Any]]:
        out = self._rows("SELECT id, model_name, version, current_version, state, reason, created, updated, "
                         "stage_started FROM rollouts ORDER BY id DESC")
        counts = self._rows("SELECT rollout_id, cohort, state, COUNT(*) AS n FROM rollout_devices "
                            "GROUP BY rollout_id, cohort, state")
        for ro in out:
            ro["devices"] = [c for c in counts if c["rollout_id"] == ro["id"]]
        return out

    def rollout_events(self, rollout_id: int, limit: int = 50) -> list[dict[str, Any]]:
        return self._rows("SELECT ts, kind, device_id, from_state, to_state, reason FROM rollout_events "
                          "WHERE rollout_id = ? ORDER BY id DESC LIMIT ?", [rollout_id, limit])

    def retrain_requests(self, limit: int = 50) -> list[dict[str, Any]]:
        out = self._rows("SELECT id, model_name, model_version, rule, kind, reason, measured, created, "
                         "dataset_path, status FROM retrain_requests ORDER BY id DESC LIMIT ?", [limit])
        for r in out:
            r["measured"] = _json(r.get("measured"), r.get("measured"))
        return out

    def rejections(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._rows("SELECT at, source, reason, size FROM rejections ORDER BY id DESC LIMIT ?", [limit])

    def binding_claims(self, limit: int = 20) -> list[dict[str, Any]]:
        """Records the cloud refused because their device is not bound to the individual (newest
        first): each waits for an operator's ``edgeloop bind``."""
        return self._rows("SELECT device_id, individual_id, reason, first_at, last_at, records "
                          "FROM binding_conflicts ORDER BY last_at DESC LIMIT ?", [limit])

    # ---- Home Assistant ---------------------------------------------------------------------------
    def device_states(self) -> dict[str, str]:
        return {r["device_id"]: r["state"] for r in self._rows("SELECT device_id, state FROM devices")}

    def device_individuals(self) -> list[tuple[str, str]]:
        """Every (individual, device) pair the records name."""
        return [(r["individual_id"], r["device_id"]) for r in
                self._rows("SELECT DISTINCT individual_id, device_id FROM records ORDER BY 1, 2")]

    def latest_summaries(self) -> dict[str, dict[str, Any]]:
        """Each individual's newest daily summary body."""
        return {r["individual_id"]: _json(r["body"], {}) for r in self._rows(
            "SELECT r.individual_id, r.body FROM records r JOIN (SELECT individual_id, MAX(ts) AS ts FROM records "
            "WHERE kind = 'summary' GROUP BY individual_id) m ON r.individual_id = m.individual_id AND r.ts = m.ts "
            "WHERE r.kind = 'summary'")}

    def latest_notified(self) -> dict[str, dict[str, Any]]:
        """Each individual's newest alert the owner was told of."""
        return {r["individual_id"]: r for r in self._rows(
            "SELECT a.individual_id, a.alert_id, a.ts, a.reason, a.rule, a.severity FROM alerts a JOIN "
            "(SELECT individual_id, MAX(ts) AS ts FROM alerts WHERE action = 'notify' GROUP BY individual_id) m "
            "ON a.individual_id = m.individual_id AND a.ts = m.ts WHERE a.action = 'notify'")}

    def individuals_alerting(self) -> set[str]:
        """Individuals with an open incident the owner was told of and has not answered."""
        return {r["individual_id"] for r in self._rows(
            "SELECT DISTINCT individual_id FROM incidents WHERE closed_at IS NULL AND notify_count > 0 "
            "AND COALESCE(answered, 0) = 0")}
