"""Device health alerts (issue 16): events of kind ``health`` are decided by the cloud's own
health rules, apart from behaviour alerts, and never open or join a behaviour incident."""

from __future__ import annotations

import pytest
from recs import record_of

from cloud.rules.notify import NotificationPolicy, handle_event, open_incident
from cloud.store.db import CloudStore
from shared.schemas import UplinkBatch

NOON = 10 * 86400.0 + 12 * 3600
POLICY = NotificationPolicy.from_toml()


def _event(store: CloudStore, seq: int, t: float, kind: str, metrics: list[str], score: float = 0.8,
           severity: str = "warning", start_ts: float | None = None):  # type: ignore[no-untyped-def]
    body = {"start_ts": t - 1800 if start_ts is None else start_ts, "ts": t, "metrics": metrics,
            "directions": [1] * len(metrics), "score": score, "severity": severity, "kind": kind,
            "baseline": [0.0] * len(metrics), "observed": [30.0] * len(metrics)}
    rec = record_of(seq=seq, kind="event", ts=t, individual_id="gate-cam", body=body)
    store.store_batch(UplinkBatch(device_id="pi-000", records=(rec,)))
    return handle_event(store, POLICY, "pi-000", rec, now=t)


@pytest.fixture
def store(any_store: CloudStore) -> CloudStore:
    return any_store


def test_a_frozen_camera_is_a_health_alert_decided_by_the_health_rules(store: CloudStore) -> None:
    d = _event(store, 1, NOON, "health", ["frozen"], score=1.0)
    assert (d.action, d.rule) == ("notify", "device-health") and "frozen on pi-000" in d.reason
    assert d.incident_id is None and open_incident(store, "gate-cam") is None, "no behaviour incident"
    again = _event(store, 2, NOON + 600, "health", ["frozen"], score=1.0, start_ts=NOON - 1800)
    assert again.rule in ("health-duplicate", "health-cooldown") and again.action == "suppress"


def test_health_events_skip_behaviour_rules_even_at_night_or_with_a_low_score(store: CloudStore) -> None:
    night = 10 * 86400.0 + 3 * 3600  # inside the default quiet hours
    d = _event(store, 1, night, "health", ["dropout"], score=0.1, severity="info")
    assert d.rule == "device-health", "not low-score, info-hold or quiet-hours: those are behaviour rules"


def test_a_behaviour_incident_does_not_swallow_a_health_alert_nor_the_reverse(store: CloudStore) -> None:
    b = _event(store, 1, NOON, "novel", ["novel_class:deer"], score=1.0)
    assert b.action == "notify" and b.incident_id is not None
    h = _event(store, 2, NOON + 60, "health", ["frozen"], score=1.0)
    assert (h.action, h.rule, h.incident_id) == ("notify", "device-health", None), "not 'grouped'"
    b2 = _event(store, 3, NOON + 120, "novel", ["scene_change"], score=0.9)
    assert b2.rule == "grouped", "the behaviour incident still groups behaviour alerts"
