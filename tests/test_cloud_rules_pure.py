"""The notification rules without a database: ``cloud.rules.notify.decide`` against an in-memory
``AlertHistory`` (cloud/rules/history.py). What the store would answer is written by hand."""

from __future__ import annotations

import json

from recs import record_of

from cloud.rules.history import MemoryHistory
from cloud.rules.notify import NotificationPolicy, decide

T = 1767571200.0 + 12 * 3600  # 2026-01-05 noon UTC: outside the default quiet hours
POLICY = NotificationPolicy.from_toml(None)


def event(seq: int, ts: float, *, severity: str = "critical", score: float = 0.9,
          metrics: tuple[str, ...] = ("resting_hr", "activity"), onset: float | None = None, ind: str = "bella"):  # type: ignore[no-untyped-def]
    body = {"start_ts": ts - 1800 if onset is None else onset, "ts": ts, "metrics": list(metrics),
            "directions": [1, -1][: len(metrics)], "score": score, "severity": severity, "kind": "sustained",
            "baseline": [60.0, 30.0][: len(metrics)], "observed": [75.0, 12.0][: len(metrics)],
            "model_version": "m1", "detector_version": "d1"}
    return record_of(seq, "event", ts, ind, body)


def run(h: MemoryHistory, rec, device: str = "collar-1"):  # type: ignore[no-untyped-def]
    return decide(h, POLICY, device, rec, rec.body, rec.ts)[0]


def test_deciding_needs_no_database() -> None:
    h = MemoryHistory()
    d = run(h, event(1, T))
    assert (d.action, d.rule, d.incident_id) == ("notify", "critical", "inc:collar-1:1")
    assert [a["alert_id"] for a in h.new_alerts] == ["collar-1:1"] and h.new_incidents == ["inc:collar-1:1"]


def test_an_episode_already_decided_is_a_duplicate() -> None:
    first = event(1, T, onset=T - 1800)
    h = MemoryHistory()
    run(h, first)
    again = run(h, event(2, T + 60, onset=T - 1800))
    assert (again.action, again.rule) == ("suppress", "duplicate")
    weaker_elsewhere = run(h, event(3, T + 60, onset=T - 1800), device="collar-2")
    assert weaker_elsewhere.rule != "duplicate", "the episode is per device"


def test_cooldown_reads_notifications_from_the_history() -> None:
    metrics = json.dumps(sorted(["resting_hr", "activity"]))
    past = {"alert_id": "collar-1:0", "device_id": "collar-1", "individual_id": "bella", "ts": T - 3600,
            "start_ts": T - 7200, "action": "notify", "severity": "warning", "metrics": metrics,
            "notified_at": T - 3600, "decided_at": T - 3600}
    warm = event(5, T, severity="warning", score=0.7)
    assert run(MemoryHistory([past]), warm).rule == "cooldown"
    assert run(MemoryHistory([dict(past, notified_at=T - 3 * 3600)]), warm).rule == "sustained-deviation"


def test_an_open_incident_groups_and_an_idle_one_closes() -> None:
    inc = {"incident_id": "inc:old", "individual_id": "bella", "opened_at": T - 600, "last_alert_at": T - 600,
           "closed_at": None, "severity": "critical", "notify_count": 1, "last_notified_at": T - 600,
           "answered": 1, "first_alert_id": "a", "last_alert_id": "a", "alert_count": 1}
    h = MemoryHistory(incidents=[inc])
    d = run(h, event(7, T, severity="warning", score=0.7))
    assert (d.action, d.rule) == ("suppress", "grouped")
    idle = MemoryHistory(incidents=[dict(inc, last_alert_at=T - 6 * 3600, last_notified_at=T - 6 * 3600)])
    d2 = run(idle, event(8, T, severity="warning", score=0.7))
    assert idle.changed_incidents["inc:old"]["closed_at"] == T - 6 * 3600 + POLICY.settings.incident_idle_close_s
    assert d2.rule == "sustained-deviation" and d2.incident_id == "inc:collar-1:8"


def test_owner_settings_and_personal_ranges_come_from_the_history() -> None:
    silenced = MemoryHistory(prefs={"bella": {"individual_id": "bella", "silenced_until": T + 3600}})
    assert run(silenced, event(1, T)).rule == "silenced"
    wide = {"bella": {("resting_hr", 1): 20.0, ("activity", -1): 20.0}}
    assert run(MemoryHistory(thresholds=wide), event(1, T)).rule == "personalised"


def test_a_backlog_is_stale_by_the_devices_newest_record() -> None:
    h = MemoryHistory(spans={("collar-1", ""): (T - 10 * 86400, T + 2 * 86400)})
    assert run(h, event(1, T)).rule == "stale"
