"""Test helper: a typed record from a JSON-shaped body, through the same codec as the wire."""

from __future__ import annotations

from typing import Any

from shared.codec import from_json
from shared.records import Record


def record_of(seq: int, kind: str, ts: float, individual_id: str, body: dict[str, Any]) -> Record:
    """``Record`` with its body decoded (and checked) like the cloud decodes a batch's record."""
    return from_json(Record, {"seq": seq, "kind": kind, "ts": ts, "individual_id": individual_id, "body": body},
                     f"record {seq}")
