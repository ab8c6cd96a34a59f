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


# ---- the dashboard --------------------------------------------------------------------------------
def fleet(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """One row per device: its retained status, last seen, individuals, and what its newest daily
    summary reported (agent and model versions, outbox backlog, rejected frames, battery)."""
    devices = {r["device_id"]: r for r in _rows(conn, "SELECT device_id, state, last_seen, status_ts FROM devices")}
    seen = {r["device_id"]: r for r in _rows(
        conn, "SELECT device_id, MAX(received_at) AS last_record, COUNT(*) AS records, "
              "GROUP_CONCAT(DISTINCT individual_id) AS individuals FROM records GROUP BY device_id")}
    latest = {r["device_id"]: r for r in _rows(
        conn, "SELECT r.device_id, r.ts, r.body FROM records r JOIN (SELECT device_id, MAX(ts) AS ts FROM records "
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
            "individuals": sorted(filter(None, (s.get("individuals") or "").split(","))),
            "records": s.get("records", 0), "summary_ts": last["ts"] if last else None,
            "agent_version": body.get("agent_version"), "model_version": body.get("model_version"),
            "detector_version": body.get("detector_version"),
            "backlog_rows": backlog.get("rows"), "backlog_bytes": backlog.get("bytes"),
            "frames_rejected": sum(int(ingest.get(k, 0) or 0) for k in
                                   ("crc_errors", "bad_length", "bad_version", "payload_rejected")) if ingest else None,
            "bytes_rejected": ingest.get("bytes_rejected"), "battery": body.get("battery"),
        })
    return out


def totals(conn: sqlite3.Connection) -> dict[str, Any]:
    one = _rows(conn, "SELECT COUNT(*) AS records, MAX(received_at) AS last_received FROM records")
    rej = _rows(conn, "SELECT COUNT(*) AS n FROM rejections")
    return {**(one[0] if one else {"records": 0, "last_received": None}),
            "rejections": rej[0]["n"] if rej else 0, "alerts": alerts_by_action(conn)}


def incidents(conn: sqlite3.Connection, limit: int = 100, individual_id: str | None = None) -> list[dict[str, Any]]:
    where, args = ("WHERE individual_id = ?", [individual_id]) if individual_id else ("", [])
    return _rows(conn, f"SELECT * FROM incidents {where} ORDER BY COALESCE(last_alert_at, opened_at) DESC LIMIT ?",
                 [*args, limit])


def incident(conn: sqlite3.Connection, incident_id: str) -> dict[str, Any] | None:
    rows = _rows(conn, "SELECT * FROM incidents WHERE incident_id = ?", [incident_id])
    return rows[0] if rows else None


def alerts(conn: sqlite3.Connection, *, incident_id: str | None = None, individual_id: str | None = None,
           limit: int = 200) -> list[dict[str, Any]]:
    where, args = [], []
    if incident_id:
        where.append("incident_id = ?")
        args.append(incident_id)
    if individual_id:
        where.append("individual_id = ?")
        args.append(individual_id)
    sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ts DESC LIMIT ?"
    out = _rows(conn, sql, [*args, limit])
    for a in out:
        a["metrics"] = _json(a.get("metrics"), a.get("metrics"))
    return out


def feedback(conn: sqlite3.Connection, *, alert_ids: list[str] | None = None, individual_id: str | None = None,
             limit: int = 500) -> list[dict[str, Any]]:
    if alert_ids is not None:
        if not alert_ids:
            return []
        marks = ",".join("?" * len(alert_ids))
        return _rows(conn, f"SELECT * FROM feedback WHERE alert_id IN ({marks}) ORDER BY ts", alert_ids)
    if individual_id:
        return _rows(conn, "SELECT * FROM feedback WHERE individual_id = ? ORDER BY ts LIMIT ?", [individual_id, limit])
    return _rows(conn, "SELECT * FROM feedback ORDER BY id DESC LIMIT ?", [limit])


def deliveries(conn: sqlite3.Connection, *, alert_ids: list[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
    if alert_ids is not None:
        if not alert_ids:
            return []
        marks = ",".join("?" * len(alert_ids))
        return _rows(conn, f"SELECT id, alert_id, channel, kind, state, attempts, last_error, created_at, updated_at, "
                           f"next_attempt_at FROM deliveries WHERE alert_id IN ({marks}) ORDER BY id", alert_ids)
    return _rows(conn, "SELECT id, alert_id, individual_id, channel, kind, state, attempts, last_error, created_at, "
                       "updated_at, next_attempt_at FROM deliveries ORDER BY id DESC LIMIT ?", [limit])


def individuals(conn: sqlite3.Connection) -> list[str]:
    return [r["individual_id"] for r in _rows(conn, "SELECT DISTINCT individual_id FROM records ORDER BY 1")]


def summaries(conn: sqlite3.Connection, individual_id: str, limit_days: int = 120) -> list[dict[str, Any]]:
    rows = _rows(conn, "SELECT device_id, ts, body FROM records WHERE kind = 'summary' AND individual_id = ? "
                       "ORDER BY ts DESC LIMIT ?", [individual_id, limit_days])
    return [{**r, "body": _json(r["body"], {})} for r in reversed(rows)]


def events(conn: sqlite3.Connection, individual_id: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = _rows(conn, "SELECT device_id, seq, ts, body FROM records WHERE kind = 'event' AND individual_id = ? "
                       "ORDER BY ts DESC LIMIT ?", [individual_id, limit])
    out = []
    for r in reversed(rows):
        body = _json(r["body"], {})
        body.pop("trace", None)
        out.append({"device_id": r["device_id"], "seq": r["seq"], "ts": r["ts"], **body})
    return out


def releases(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT name, version, sha256, status, updated, rollout_id FROM releases ORDER BY updated DESC")


def rollouts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    out = _rows(conn, "SELECT id, model_name, version, current_version, state, reason, created, updated, "
                      "stage_started FROM rollouts ORDER BY id DESC")
    counts = _rows(conn, "SELECT rollout_id, cohort, state, COUNT(*) AS n FROM rollout_devices "
                         "GROUP BY rollout_id, cohort, state")
    for ro in out:
        ro["devices"] = [c for c in counts if c["rollout_id"] == ro["id"]]
    return out


def rollout_events(conn: sqlite3.Connection, rollout_id: int, limit: int = 50) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT ts, kind, device_id, from_state, to_state, reason FROM rollout_events "
                       "WHERE rollout_id = ? ORDER BY id DESC LIMIT ?", [rollout_id, limit])


def retrain_requests(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    out = _rows(conn, "SELECT id, model_name, model_version, rule, kind, reason, measured, created, dataset_path, "
                      "status FROM retrain_requests ORDER BY id DESC LIMIT ?", [limit])
    for r in out:
        r["measured"] = _json(r.get("measured"), r.get("measured"))
    return out


def rejections(conn: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT at, source, reason, size FROM rejections ORDER BY id DESC LIMIT ?", [limit])


def binding_claims(conn: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """Records the cloud refused because their device is not bound to the individual (newest
    first): each waits for an operator's ``edgeloop bind``."""
    return _rows(conn, "SELECT device_id, individual_id, reason, first_at, last_at, records FROM binding_conflicts "
                 "ORDER BY last_at DESC LIMIT ?", [limit])
