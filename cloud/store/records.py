"""Records, incarnations, device states and rejections: their SQL, on either back end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloud.store.backend import Backend
from shared.codec import to_json
from shared.schemas import Record, UplinkBatch

_CHUNK = 400  # rows per multi-row INSERT (SQLite allows 32,766 parameters)
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
        """Insert the batch's records once each with multi-row ``INSERT ... ON CONFLICT DO
        NOTHING RETURNING seq`` (in the caller's transaction, if one is open): a record is new
        only if this insert stored it."""
        if not batch.records:
            return StoreResult((), 0)
        stored: set[int] = set()
        with self.b.transaction():
            for i in range(0, len(batch.records), _CHUNK):
                part = batch.records[i:i + _CHUNK]
                args: list[Any] = []
                for r in part:
                    args += [batch.device_id, batch.incarnation, r.seq, r.kind, r.ts, r.individual_id,
                             body_json(r), now]
                values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(part))
                cur = self.b.execute(
                    "INSERT INTO records (device_id, incarnation, seq, kind, ts, individual_id, body, received_at) "
                    f"VALUES {values} ON CONFLICT DO NOTHING RETURNING seq", args)
                stored.update(int(row[0]) for row in cur.fetchall())
        new: list[Record] = []
        for r in batch.records:  # a seq twice in one batch is stored (and new) once
            if r.seq in stored:
                new.append(r)
                stored.discard(r.seq)
        return StoreResult(tuple(new), len(batch.records) - len(new))

    def note_incarnation(self, device_id: str, incarnation: str, first_seq: int, now: float) -> int | None:
        """Remember a device's incarnation; None if known, else how many it had before."""
        cur = self.b.execute("INSERT INTO incarnations (device_id, incarnation, first_seen, first_seq) "
                             "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", [device_id, incarnation, now, first_seq])
        if cur.rowcount != 1:
            return None
        return int(self.b.execute("SELECT COUNT(*) - 1 FROM incarnations WHERE device_id = ?",
                                  [device_id]).fetchone()[0])

    def record(self, device_id: str, incarnation: str, seq: int) -> dict[str, Any] | None:
        rows = self.b.query("SELECT * FROM records WHERE device_id = ? AND incarnation = ? AND seq = ?",
                            [device_id, incarnation, seq])
        return dict(rows[0], body=json.loads(rows[0]["body"])) if rows else None

    def records(self, kind: str | None = None, individual_id: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if individual_id:
            where.append("individual_id = ?")
            args.append(individual_id)
        sql = "SELECT * FROM records" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self.b.query(sql + " ORDER BY ts, device_id, incarnation, seq", args)
        return [dict(r, body=json.loads(r["body"])) for r in rows]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self.b.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        return int(self.b.execute("SELECT COUNT(*) FROM records WHERE kind = ?", [kind]).fetchone()[0])

    def set_device_state(self, device_id: str, state: str, ts: float, now: float) -> None:
        self.b.execute("INSERT INTO devices (device_id, state, last_seen, status_ts) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, "
                       "last_seen = excluded.last_seen, status_ts = excluded.status_ts",
                       [device_id, state, now, ts])

    def reject(self, source: str, reason: str, size: int, now: float) -> None:
        """Record a rejected message (bounded: keeps the latest 10,000)."""
        with self.b.transaction():
            cur = self.b.execute("INSERT INTO rejections (at, source, reason, size) VALUES (?, ?, ?, ?) "
                                 "RETURNING id", [now, source[:200], reason[:500], size])
            newest = int(cur.fetchone()[0])
            self.b.execute("DELETE FROM rejections WHERE id <= ?", [newest - _REJECTIONS_KEPT])

    def rejections(self, limit: int = 100) -> Sequence[dict[str, Any]]:
        return self.b.query("SELECT * FROM rejections ORDER BY id DESC LIMIT ?", [limit])
