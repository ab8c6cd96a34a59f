"""The rules' repositories on both back ends: alerts and incidents (what ``cloud.rules`` reads and
writes through ``store.alerts``), bindings, commands and deliveries."""

from __future__ import annotations

import json

import pytest
from storerows import count, row

from cloud.store.bindings import BindingRepository
from cloud.store.commands import CommandRepository
from cloud.store.db import CloudStore
from cloud.store.deliveries import CLAIM_S, DeliveryRepository
from shared.schemas import Record, UplinkBatch

T = 1_000_000.0


def _incident(iid: str, ind: str, opened: float, **kw: object) -> dict[str, object]:
    return {"incident_id": iid, "individual_id": ind, "opened_at": opened, "last_alert_at": opened,
            "closed_at": None, "severity": "warning", "notify_count": 1, "last_notified_at": opened,
            "answered": 0, "first_alert_id": f"a-{iid}", "last_alert_id": f"a-{iid}", "alert_count": 1, **kw}


def test_owner_settings_change_only_what_is_given(any_store: CloudStore) -> None:
    repo = any_store.alerts
    assert repo.prefs("rex") == {}
    repo.set_prefs("rex", {"tz_offset_h": 2.0, "quiet_start": "21:00"})
    repo.set_prefs("rex", {"silenced_until": T})
    repo.set_prefs("rex", {})
    got = repo.prefs("rex")
    assert (got["tz_offset_h"], got["quiet_start"], got["silenced_until"], got["quiet_end"]) == (2.0, "21:00", T, None)
    with pytest.raises(ValueError, match="unknown columns"):
        repo.set_prefs("rex", {"tz": 1.0})


def test_incidents_open_update_close(any_store: CloudStore) -> None:
    repo = any_store.alerts
    with repo.transaction():
        repo.add_incident(_incident("i1", "rex", T))
        repo.add_incident(_incident("i2", "rex", T + 60, answered=1))
        repo.add_incident(_incident("i3", "bella", T + 30, notify_count=0))
    assert [i["incident_id"] for i in repo.open_incidents("rex")] == ["i2", "i1"], "newest first"
    assert [i["incident_id"] for i in repo.open_incidents()] == ["i2", "i3", "i1"]
    assert [i["incident_id"] for i in repo.unanswered_incidents()] == ["i1", "i3"], "oldest first"
    repo.update_incident("i1", {"notify_count": 2, "last_notified_at": T + 5})
    assert (row(any_store, "incidents", "i1")["notify_count"], row(any_store, "incidents", "i1")["alert_count"]) == (2, 1)
    repo.close_incident("i1", T + 100)
    repo.close_incident("i1", T + 200)  # closed once
    assert row(any_store, "incidents", "i1")["closed_at"] == T + 100
    assert [i["incident_id"] for i in repo.open_incidents("rex")] == ["i2"]
    with pytest.raises(ValueError, match="unknown columns"):
        repo.update_incident("i2", {"closed_at": 1.0, "drop table": 1})


def _event_record(seq: int, ts: float) -> Record:
    from recs import record_of

    return record_of(seq, "event", ts, "rex", {
        "start_ts": ts - 60, "ts": ts, "metrics": ["skin_temp"], "directions": [1], "score": 0.5,
        "severity": "warning", "kind": "sustained", "baseline": [38.0], "observed": [39.0],
        "model_version": "m1", "detector_version": "d1"})


def test_alerts_bodies_and_raw_windows(any_store: CloudStore) -> None:
    from recs import record_of

    from cloud.rules.notify import NotificationPolicy, handle_event

    rec = _event_record(1, T)
    raw = [record_of(10 + i, "raw", T + 60 * i, "rex", {"minute_ts": T + 60 * i, "names": ["skin_temp"],
                                                      "metrics": [39.0], "label": "rest", "accel": None})
           for i in range(3)]
    any_store.store_batch(UplinkBatch("dev1", (rec, *raw)))
    d = handle_event(any_store, NotificationPolicy.from_toml(), "dev1", rec, now=T)
    repo = any_store.alerts
    a = repo.alert(d.alert_id)
    assert a is not None and a["action"] == d.action and repo.alert("nope:1") is None
    assert repo.event_body(d.alert_id)["observed"] == [39.0] and repo.event_body("nope:1") == {}
    assert repo.first_raw("dev1", T) == T and repo.first_raw("dev1", T + 1) == T + 60
    assert repo.first_raw("dev2", 0.0) is None
    bodies = repo.raw_bodies("dev1", T + 60, T + 120, 10)
    assert len(bodies) == 2 and json.loads(bodies[0])["metrics"] == [39.0]
    assert len(repo.raw_bodies("dev1", T, T + 120, 1)) == 1
    repo.update_alert(d.alert_id, {"state": "collecting", "decided_at": T + 5})
    assert [r["alert_id"] for r in repo.collecting_due(T + 5)] == [d.alert_id]
    assert repo.collecting_due(T + 4) == []
    repo.update_alert(d.alert_id, {"state": "deferred", "incident_id": "inc-x"})
    repo.notify_deferred("inc-x", T + 9)
    assert (row(any_store, "alerts", d.alert_id)["state"], row(any_store, "alerts", d.alert_id)["notified_at"]) == \
        ("notified", T + 9)


def test_bindings_admit_bind_provision_and_list(any_store: CloudStore) -> None:
    repo = BindingRepository(any_store.backend)
    with any_store.backend.transaction():
        v = repo.admit("collar-1", ["bella", "collar-1", "bella", "daisy"], now=T)
    assert v.bound_now == ("bella",) and "bound to bella" in (v.reason("daisy") or "")
    repo.note_refused("collar-1", "daisy", "no", 2, now=T)
    repo.note_refused("collar-1", "daisy", "still no", 3, now=T + 1)
    _, refused = repo.listing()
    assert [(c["individual_id"], c["records"], c["reason"], c["first_at"], c["last_at"]) for c in refused] == \
        [("daisy", 5, "still no", T, T + 1)]
    assert repo.bind("collar-1", "daisy", replace=True, now=T + 2) == ["bella"]
    assert repo.bound_to("collar-1") == {"daisy"} and repo.listing()[1] == []
    assert repo.provision([("collar-2", ["rex", "max"]), ("collar-1", ["daisy"])]) == 2
    assert repo.bound_many(["collar-1", "collar-2", "collar-9"]) == {
        "collar-1": {"daisy"}, "collar-2": {"rex", "max"}, "collar-9": set()}
    assert repo.holders("daisy") == ["collar-1"]
    assert repo.unbind("collar-2", "rex") and not repo.unbind("collar-2", "rex")
    with any_store.backend.transaction():
        v = repo.admit("collar-3", ["daisy"], policy="first_seen", now=T)
    assert "bound to device collar-1" in (v.reason("daisy") or "")


def test_command_positions_and_kept_commands(any_store: CloudStore) -> None:
    repo = CommandRepository(any_store.backend)
    assert repo.position("dev-1") == (0, 0)
    repo.set_position("dev-1", 0, 1)
    repo.set_position("dev-1", 2, 1)
    assert repo.position("dev-1") == (2, 1) and count(any_store, "command_counters") == 1
    cmd = {"command_id": "c1", "device_id": "dev-1", "name": "config", "counter": 1, "args": "{}", "sent_at": T,
           "reason": "r", "epoch": 2, "expires_at": T + 60, "incarnation": "inc"}
    repo.save(cmd)
    repo.save({**cmd, "reason": "again"})
    assert repo.count() == 1 and repo.sent("dev-1")[0]["reason"] == "again" and repo.sent()[0]["epoch"] == 2


def test_deliveries_claim_once_and_record_outcomes(any_store: CloudStore) -> None:
    repo = DeliveryRepository(any_store.backend)
    a = repo.add("a1", "rex", "hook", "webhook", "{}", T)
    b = repo.add("a1", "rex", "log", "log", "{}", T)
    assert b > a and repo.due(T, set()) == [], "claimed by the process that queued them"
    due = repo.due(T + CLAIM_S, {b})
    assert [r["id"] for r in due] == [a]
    assert repo.claim(a, T + CLAIM_S) and not repo.claim(a, T + CLAIM_S), "one claim"
    with repo.transaction():
        repo.outcome(a, "sent", 1, "", 0.0, T + CLAIM_S)
        repo.outcome(b, "failed", 2, "x" * 600, 0.0, T + CLAIM_S)
    rows = {r["channel"]: r for r in repo.recent(alert_id="a1")}
    assert rows["hook"]["state"] == "sent" and len(rows["log"]["last_error"]) == 500
    assert repo.counts() == {("hook", "sent"): 1, ("log", "failed"): 1} and repo.recent(limit=1)[0]["id"] == b
