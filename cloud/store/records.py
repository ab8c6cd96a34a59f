"""Records, incarnations, device states and rejections: their SQL, on either back end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloud.store.backend import Backend, where_equal
from shared.codec import to_json
from shared.schemas import Record, UplinkBatch

RECORD_COLUMNS = ("device_id", "incarnation", "seq", "kind", "ts", "individual_id", "body", "received_at")
RECORD_TYPES = ("text", "text", "bigint", "text", "float8", "text", "text", "float8")
_REJECTIONS_KEPT = 10_000


@dataclass(frozen=True)
class StoreResult:
    new: tuple[Record, ...]
    duplicates: int


def body_json(r: Record) -> str:
    return json.dumps(to_json(r.body), separators=(",", ":"))


class RecordRepository:
    """``records``, ``incarnations``, ``devices``, ``rejections``."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def store_batch(self, batch: UplinkBatch, now: float) -> StoreResult:
        """Insert the batch's records once each (in the caller's transaction, if one is open): a
        record is new only if this insert stored it."""
        return self.store_batches([batch], now)[0]

    def store_batches(self, batches: Sequence[UplinkBatch], now: float) -> list[StoreResult]:
        """Several batches' records with one ``INSERT ... ON CONFLICT DO NOTHING RETURNING``."""
        rows = [(b.device_id, b.incarnation, r.seq, str(r.kind), r.ts, r.individual_id, body_json(r), now)
                for b in batches for r in b.records]
        stored = set(self.b.insert_many("records", RECORD_COLUMNS, RECORD_TYPES, rows,
                                        returning="device_id, incarnation, seq"))
        out = []
        for b in batches:
            new: list[Record] = []
            for r in b.records:  # a seq twice in one batch is stored (and new) once
                key = (b.device_id, b.incarnation, r.seq)
                if key in stored:
                    new.append(r)
                    stored.discard(key)
            out.append(StoreResult(tuple(new), len(b.records) - len(new)))
        return out

    def note_incarnation(self, device_id: str, incarnation: str, first_seq: int, now: float) -> int | None:
        """Remember a device's incarnation; None if known, else how many it had before."""
        cur = self.b.execute("INSERT INTO incarnations (device_id, incarnation, first_seen, first_seq) "
                             "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", [device_id, incarnation, now, first_seq])
        if cur.rowcount != 1:
            return None
        return int(self.b.execute("SELECT COUNT(*) - 1 FROM incarnations WHERE device_id = ?",
                                  [device_id]).fetchone()[0])

    def note_incarnations(self, firsts: Sequence[tuple[str, str, int]], now: float) -> dict[tuple[str, str], int]:
        """Many :meth:`note_incarnation` at once: ``firsts`` are (device, incarnation, first seq);
        returns the new ones with how many incarnations their device had before."""
        if not firsts:
            return {}
        new = self.b.insert_many("incarnations", ("device_id", "incarnation", "first_seen", "first_seq"),
                                 ("text", "text", "float8", "bigint"),
                                 [(d, i, now, s) for d, i, s in firsts], returning="device_id, incarnation")
        if not new:
            return {}
        devices = sorted({d for d, _ in new})
        counts = dict(self.b.execute(
            f"SELECT device_id, COUNT(*) FROM incarnations WHERE device_id IN ({', '.join('?' * len(devices))}) "
            "GROUP BY device_id", devices).fetchall())
        return {(d, i): int(counts[d]) - 1 for d, i in new}

    def current_incarnation(self, device_id: str) -> str:
        """The device's incarnation now: its latest status's, else the newest one its records
        brought, else "" (never seen, or a v1 device)."""
        row = self.b.execute("SELECT incarnation FROM devices WHERE device_id = ?", [device_id]).fetchone()
        if row and row[0]:
            return str(row[0])
        row = self.b.execute("SELECT incarnation FROM incarnations WHERE device_id = ? "
                             "ORDER BY first_seen DESC LIMIT 1", [device_id]).fetchone()
        return str(row[0]) if row else ""

    def record(self, device_id: str, incarnation: str, seq: int) -> dict[str, Any] | None:
        rows = self.b.query("SELECT * FROM records WHERE device_id = ? AND incarnation = ? AND seq = ?",
                            [device_id, incarnation, seq])
        return dict(rows[0], body=json.loads(rows[0]["body"])) if rows else None

    def records(self, kind: str | None = None, individual_id: str | None = None) -> list[dict[str, Any]]:
        where, args = where_equal(kind=kind, individual_id=individual_id)
        rows = self.b.query(f"SELECT * FROM records{where} ORDER BY ts, device_id, incarnation, seq", args)
        return [dict(r, body=json.loads(r["body"])) for r in rows]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self.b.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        return int(self.b.execute("SELECT COUNT(*) FROM records WHERE kind = ?", [kind]).fetchone()[0])

    def set_device_state(self, device_id: str, state: str, ts: float | None, now: float,
                         incarnation: str = "") -> None:
        """A status: the device's state and, when the status names one, its current incarnation."""
        self.b.execute("INSERT INTO devices (device_id, state, last_seen, status_ts, incarnation) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, "
                       "last_seen = excluded.last_seen, status_ts = excluded.status_ts, incarnation = "
                       "CASE WHEN excluded.incarnation = '' THEN devices.incarnation ELSE excluded.incarnation END",
                       [device_id, state, now, ts, incarnation])

    def reject_many(self, rows: Sequence[tuple[float, str, str, int]]) -> None:
        """Record rejected messages ``(at, source, reason, size)`` in one transaction (bounded:
        keeps the latest 10,000)."""
        if not rows:
            return
        with self.b.transaction():
            self.b.executemany("INSERT INTO rejections (at, source, reason, size) VALUES (?, ?, ?, ?)",
                               [(at, src[:200], reason[:500], size) for at, src, reason, size in rows])
            self.b.execute("DELETE FROM rejections WHERE id <= (SELECT MAX(id) FROM rejections) - ?",
                           [_REJECTIONS_KEPT])

    def rejections(self, limit: int = 100) -> Sequence[dict[str, Any]]:
        return self.b.query("SELECT * FROM rejections ORDER BY id DESC LIMIT ?", [limit])
