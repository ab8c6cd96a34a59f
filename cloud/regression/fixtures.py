"""Builders for alerts and feedback rows in the real tables (tests, demo, benchmarks).

They write what ``cloud.rules`` and ``cloud.feedback`` would write, with only the columns the
learning loop reads filled in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cloud.store.db import CloudStore
from cloud.store.regression import EvidenceRepository


def add_alert(store: CloudStore, alert_id: str, ts: float, *, device_id: str = "dev-1",
              individual_id: str = "ind-1", seq: int | None = None, action: str = "notify",
              score: float = 0.7, severity: str = "warning",
              metrics: Mapping[str, tuple[float, float]] | None = None,
              model_version: str | int = "1", detector_version: str | int = "1") -> str:
    """Insert one decided alert; ``metrics`` maps name -> (observed, baseline). Commits unless
    called inside a transaction (wrap many calls in ``with store.backend.transaction():`` for speed)."""
    m = dict(metrics or {"resting_hr": (70.0, 60.0)})
    EvidenceRepository(store.backend).add_alert({
        "alert_id": alert_id, "device_id": device_id, "seq": seq, "individual_id": individual_id,
        "ts": ts, "start_ts": ts - 3600, "action": action, "reason": "test", "rule": "test",
        "incident_id": None, "severity": severity, "metrics": json.dumps(sorted(m)),
        "score": score, "model_version": str(model_version),
        "detector_version": str(detector_version),
        "notified_at": ts if action == "notify" else None,
        "state": "notified" if action == "notify" else "held", "decided_at": ts,
        "directions": json.dumps({k: 1 for k in m}),
        "observed": json.dumps({k: v[0] for k, v in m.items()}),
        "baseline": json.dumps({k: v[1] for k, v in m.items()}),
    })
    return alert_id


def add_feedback(store: CloudStore, alert_id: str | None, action: str, ts: float, *, label: str = "",
                 individual_id: str = "ind-1", device_id: str = "dev-1",
                 model_version: str | int | None = None) -> int:
    """Insert one feedback row (explicit or implicit); returns its id."""
    return EvidenceRepository(store.backend).add_feedback({
        "alert_id": alert_id, "individual_id": individual_id, "device_id": device_id,
        "action": action, "label": label, "ts": ts,
        "model_version": None if model_version is None else str(model_version), "received_at": ts})

