"""Inherited regression cases: every confirmed miss and confirmed false alarm, kept forever.

A case stores the trace the decision was made on (``window``: the alert row, the device's event
record and the raw-window records around it when the device uploaded them), the outcome a correct
detector must produce (``expected``: ``alert`` for a miss, ``no_alert`` for a false alarm), whether
it is *sensitive* (a regression on it blocks any release) and its provenance (alert and feedback
ids, device, individual, seq, model version).

There is no delete API, and a trigger makes ``DELETE FROM regression_cases`` abort.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from cloud.regression.errors import CaseNotFoundError
from cloud.regression.evidence import Labelled, labelled
from cloud.regression.replay import window_numbers
from cloud.store.db import CloudStore
from cloud.store.regression import EvidenceRepository, RegressionRepository
from shared.config import doc

logger = logging.getLogger(__name__)
MAX_RAW_RECORDS = 500


@dataclass(frozen=True)
class RegressionConfig:
    """Which cases become sensitive and how much trace each case keeps."""

    sensitive_kinds: tuple[str, ...] = field(
        default=("miss",), metadata=doc("case kinds that are always sensitive (miss, false_alarm, confirmed)"))
    capture_confirmed: bool = field(
        default=False, metadata=doc("also keep confirmed true positives as cases (expected: alert), so a "
                                    "candidate that stays silent cannot pass on false-alarm cases alone"))
    sensitive_severities: tuple[str, ...] = field(
        default=("critical",), metadata=doc("alert severities whose cases are sensitive"))
    raw_pad_seconds: float = field(
        default=3600.0, metadata=doc("raw records kept this long before the event start and after it"))

    def validate(self) -> None:
        bad = set(self.sensitive_kinds) - {"miss", "false_alarm", "confirmed"}
        if bad:
            raise ValueError(f"sensitive_kinds: {sorted(bad)} unknown, use miss, false_alarm, confirmed")
        if self.raw_pad_seconds < 0:
            raise ValueError(f"raw_pad_seconds must be >= 0, found {self.raw_pad_seconds}")


@dataclass(frozen=True)
class RegressionCase:
    id: int
    kind: str
    individual_id: str
    device_id: str
    seq: int | None
    alert_id: str | None
    feedback_id: int | None
    model_version: str | None
    window: dict[str, Any]
    expected: str
    sensitive: bool
    sensitive_reason: str
    created: float
    source: dict[str, Any]

    @property
    def expects_alert(self) -> bool:
        return self.expected == "alert"


def _source_key(item: Labelled) -> str:
    return f"alert:{item.alert_id}" if item.alert_id else f"feedback:{item.feedback_id}"


def _window(evidence: EvidenceRepository, item: Labelled, pad: float) -> dict[str, Any]:
    event = None
    if item.seq is not None and item.device_id:
        event = evidence.record(item.device_id, item.alert.get("incarnation") or "", item.seq)
        if event is not None:
            event["body"] = json.loads(event["body"])
    start = item.alert.get("start_ts") or item.ts
    lo, hi = min(start, item.ts) - pad, max(start, item.ts) + pad
    raw = [dict(r, body=json.loads(r["body"]))
           for r in evidence.raw_records(item.device_id, lo, hi, MAX_RAW_RECORDS)]
    numbers = window_numbers(item.alert or None, event["body"] if event else None)
    return {"alert": item.alert or None, "event": event, "raw": raw, "numbers": numbers.to_json()}


def capture_cases(store: CloudStore, now: float, config: RegressionConfig | None = None, *,
                  items: list[Labelled] | None = None) -> list[RegressionCase]:
    """Turn every confirmed miss and false alarm (feedback up to ``now``) into a case, once.

    Idempotent: an alert (or alert-less miss report) yields at most one case. The case keeps the
    label it had when captured; later feedback on the same alert does not rewrite history.
    Returns the newly created cases. ``items``: ``labelled(store, now)`` if already computed.
    """
    cfg = config or RegressionConfig()
    repo = RegressionRepository(store.backend)
    evidence = EvidenceRepository(store.backend)
    known = repo.case_keys()
    new_ids: list[int] = []
    with store.backend.transaction():
        for item in labelled(store, now) if items is None else items:
            kind = item.case_kind
            key = _source_key(item)
            if kind is None or key in known or (kind == "confirmed" and not cfg.capture_confirmed):
                continue
            reasons = []
            if kind in cfg.sensitive_kinds:
                reasons.append(f"kind {kind} is sensitive")
            if item.severity and item.severity in cfg.sensitive_severities:
                reasons.append(f"severity {item.severity} is sensitive")
            source = {"alert_id": item.alert_id, "feedback_id": item.feedback_id,
                      "feedback_action": item.feedback_action, "feedback_label": item.feedback_label,
                      "feedback_ts": item.feedback_ts, "device_id": item.device_id,
                      "individual_id": item.individual_id, "seq": item.seq,
                      "model_version": item.model_version,
                      "detector_version": item.detector_version, "notified": item.notified}
            row = {"kind": kind, "individual_id": item.individual_id, "device_id": item.device_id,
                   "seq": item.seq, "alert_id": item.alert_id, "feedback_id": item.feedback_id,
                   "source_key": key, "model_version": item.model_version,
                   "window": json.dumps(_window(evidence, item, cfg.raw_pad_seconds), default=str),
                   "expected": "alert" if kind in ("miss", "confirmed") else "no_alert",
                   "sensitive": int(bool(reasons)), "sensitive_reason": "; ".join(reasons),
                   "created": now, "source": json.dumps(source)}
            # None: another process may have captured the same case meanwhile (unique key)
            case_id = repo.insert_case(row)
            known.add(key)
            if case_id is None:
                continue
            new_ids.append(case_id)
            logger.info("regression.case_captured", extra={
                "case_kind": kind, "device_id": item.device_id,
                "individual_id": item.individual_id, "alert_id": item.alert_id})
    return [get_case(store, i) for i in new_ids]


def _row_to_case(r: dict[str, Any]) -> RegressionCase:
    return RegressionCase(
        id=r["id"], kind=r["kind"], individual_id=r["individual_id"], device_id=r["device_id"],
        seq=r["seq"], alert_id=r["alert_id"], feedback_id=r["feedback_id"],
        model_version=r["model_version"], window=json.loads(r["window"]), expected=r["expected"],
        sensitive=bool(r["sensitive"]), sensitive_reason=r["sensitive_reason"] or "",
        created=r["created"], source=json.loads(r["source"] or "{}"))


def list_cases(store: CloudStore) -> list[RegressionCase]:
    """Every regression case, oldest first."""
    return [_row_to_case(r) for r in RegressionRepository(store.backend).cases()]


def get_case(store: CloudStore, case_id: int) -> RegressionCase:
    row = RegressionRepository(store.backend).case(case_id)
    if row is None:
        raise CaseNotFoundError(f"regression case {case_id} not found: list cases with list_cases(store)")
    return _row_to_case(row)


def mark_sensitive(store: CloudStore, case_id: int, reason: str, now: float | None = None) -> None:
    """Mark a case sensitive (never the reverse: a sensitive case stays sensitive)."""
    case = get_case(store, case_id)
    why = "; ".join(x for x in (case.sensitive_reason, f"marked: {reason}") if x)
    RegressionRepository(store.backend).mark_sensitive(case_id, why)
    logger.info("regression.case_marked_sensitive", extra={"case_id": case_id, "reason": reason,
                                                          "at": now or time.time()})
