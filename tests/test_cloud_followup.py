"""collect_more, then decide again on the extra data: judge (pure) and the store follow-up."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from recs import record_of
from storerows import row

from cloud.feedback.periodic import periodic
from cloud.notifiers import LogNotifier
from cloud.rules.followup import collected_followups, judge
from cloud.rules.notify import NotificationPolicy, handle_event, set_individual_prefs
from cloud.store.db import CloudStore
from shared.schemas import UplinkBatch

DAY = 86400.0
NOON = 10 * DAY + 12 * 3600
DEFAULT = NotificationPolicy.from_toml()
POLICY = dataclasses.replace(DEFAULT, settings=dataclasses.replace(DEFAULT.settings, collect_followup=True))
WAIT = POLICY.settings.collect_duration_s + POLICY.settings.collect_grace_s
DONE = NOON + 60 + WAIT  # the extra data starts a minute after the event
EV = {"metrics": ["skin_temp"], "directions": [1], "baseline": [38.4], "observed": [39.2]}
NAMES = ["heart_rate", "resting_hr", "activity", "skin_temp"]


def rows(temp: float, n: int = 30) -> list[list[float | None]]:
    return [[90.0, None, 4.0, temp] for _ in range(n)]


def test_judge_still_resolved_and_no_data() -> None:
    assert judge(EV, NAMES, rows(39.1)).outcome == "still"
    assert judge(EV, NAMES, rows(38.5)).outcome == "resolved"
    assert judge(EV, NAMES, rows(38.81)).outcome == "still", "just over half of the deviation kept"
    assert judge(EV, NAMES, rows(39.1, n=5)).outcome == "no_data", "too few values"
    assert judge(EV, ["heart_rate"], [[90.0]] * 30).outcome == "no_data", "metric not uploaded"
    down = {"metrics": ["activity"], "directions": [-1], "baseline": [6.0], "observed": [3.0]}
    assert judge(down, NAMES, [[0, 0, 3.2, 0]] * 20).outcome == "still"
    assert judge(down, NAMES, [[0, 0, 8.0, 0]] * 20).outcome == "resolved", "overshoot is not a deviation"
    two = {"metrics": ["heart_rate", "skin_temp"], "directions": [1, 1], "baseline": [80.0, 38.4],
           "observed": [100.0, 39.2]}
    v = judge(two, NAMES, rows(38.4))
    assert v.outcome == "still" and "heart_rate" in v.detail, "one metric still deviating is enough"


@given(st.floats(36.0, 42.0), st.floats(0.1, 1.0))
def test_judge_keeps_the_share_of_the_deviation(temp: float, fraction: float) -> None:
    kept = (temp - 38.4) / abs(39.2 - 38.4)  # the same arithmetic as judge
    assert (judge(EV, NAMES, rows(temp), fraction).outcome == "still") == (kept >= fraction)


def _collecting(store: CloudStore, seq: int, t: float = NOON, dev: str = "dev1", ind: str = "rex") -> str:
    body = {"start_ts": t - 3600, "ts": t, "score": 0.5, "severity": "warning", "kind": "sustained",
            "model_version": "m1", "detector_version": "d1", **EV}
    rec = record_of(seq, "event", t, ind, body)
    store.store_batch(UplinkBatch(dev, (rec,)))
    d = handle_event(store, POLICY, dev, rec, now=t)
    assert (d.action, d.rule) == ("collect_more", "single-weak-metric")
    return d.alert_id


def _raw(store: CloudStore, seq0: int, t0: float, temp: float, n: int = 60, dev: str = "dev1") -> None:
    store.store_batch(UplinkBatch(dev, tuple(
        record_of(seq0 + i, "raw", t0 + 60 * i, "rex", {"minute_ts": t0 + 60 * i, "metrics": [90.0, None, 4.0, temp],
                                                     "names": NAMES, "label": "rest", "accel": None})
        for i in range(n))))


def test_extra_data_still_deviating_notifies_through_an_incident(any_store: CloudStore) -> None:
    store = any_store
    aid = _collecting(store, 1)
    _raw(store, 2, NOON + 60, 39.0)
    assert collected_followups(store, POLICY, DONE - 1) == [], "not before the collection has run"
    notifier = LogNotifier()
    res = periodic(store, POLICY, DONE, [notifier])
    (d,) = res.followups
    a = row(store, "alerts", aid)
    assert (d.action, d.rule, a["state"], a["action"]) == ("notify", "collected-confirms", "notified", "notify")
    assert "extra data confirms: skin_temp median 39" in a["reason"] and "single-weak-metric" in a["reason"]
    assert a["notified_at"] == DONE and a["incident_id"] == d.incident_id
    assert row(store, "incidents", d.incident_id)["notify_count"] == 1
    assert [p["alert_id"] for p in notifier.payloads] == [aid]
    assert periodic(store, POLICY, DONE + WAIT, [notifier]).followups == (), "decided once"


def test_extra_data_back_to_normal_or_missing_is_held(any_store: CloudStore) -> None:
    store = any_store
    back = _collecting(store, 1, dev="dev1")
    _raw(store, 2, NOON + 60, 38.45, dev="dev1")
    silent = _collecting(store, 1, dev="dev2")
    assert collected_followups(store, POLICY, DONE) == []
    assert row(store, "alerts", silent)["state"] == "collecting", "no upload yet: waiting"
    assert collected_followups(store, POLICY, NOON + POLICY.settings.collect_max_wait_s) == []
    a, b = row(store, "alerts", back), row(store, "alerts", silent)
    assert (a["state"], a["rule"]) == ("held", "collected-resolved") and "back to normal" in a["reason"]
    assert (b["state"], b["rule"]) == ("held", "collected-no-data")


def test_followup_respects_quiet_hours_grouping_silence_and_the_switch() -> None:
    night = 10 * DAY + 23 * 3600
    store = CloudStore()
    aid = _collecting(store, 1, t=night)
    _raw(store, 2, night + 60, 39.0)
    assert collected_followups(store, POLICY, night + 60 + WAIT) == []
    assert row(store, "alerts", aid)["state"] == "deferred", "delivered when quiet hours end"

    store = CloudStore()
    aid = _collecting(store, 1)
    _raw(store, 2, NOON + 60, 39.0)
    strong = {"start_ts": NOON, "ts": NOON + 600, "score": 0.9, "severity": "critical", "kind": "sustained",
              "model_version": "m1", "detector_version": "d1", "metrics": ["heart_rate", "skin_temp"],
              "directions": [1, 1], "baseline": [80.0, 38.4], "observed": [110.0, 39.4]}
    rec = record_of(200, "event", NOON + 600, "rex", strong)
    store.store_batch(UplinkBatch("dev1", (rec,)))
    told = handle_event(store, POLICY, "dev1", rec, now=NOON + 600)
    assert told.action == "notify"
    assert collected_followups(store, POLICY, DONE) == [], "the owner was told already"
    a = row(store, "alerts", aid)
    assert (a["state"], a["rule"], a["incident_id"]) == ("suppressed", "collected-confirms-grouped",
                                                               told.incident_id)

    store = CloudStore()
    aid = _collecting(store, 1)
    _raw(store, 2, NOON + 60, 39.0)
    set_individual_prefs(store, "rex", silenced_until=NOON + DAY)
    assert collected_followups(store, POLICY, DONE) == []
    assert row(store, "alerts", aid)["rule"] == "collected-confirms-silenced"

    store = CloudStore()  # off by default (the shipped rules)
    aid = _collecting(store, 1)
    _raw(store, 2, NOON + 60, 39.0)
    assert not DEFAULT.settings.collect_followup
    assert collected_followups(store, DEFAULT, DONE) == [] and row(store, "alerts", aid)["state"] == "collecting"


def test_a_late_collection_is_waited_for_and_a_missing_one_given_up(any_store: CloudStore) -> None:
    store = any_store
    aid = _collecting(store, 1)
    late = NOON + 5 * 3600  # the device got the command only when it next connected
    assert collected_followups(store, POLICY, late) == [], "nothing uploaded yet: wait"
    _raw(store, 2, late, 39.0)
    assert collected_followups(store, POLICY, late + 600) == [], "still collecting"
    (d,) = collected_followups(store, POLICY, late + WAIT)
    assert d.alert_id == aid
    store = CloudStore()
    aid = _collecting(store, 1)
    assert collected_followups(store, POLICY, NOON + POLICY.settings.collect_max_wait_s) == []
    assert row(store, "alerts", aid)["rule"] == "collected-no-data"


@pytest.mark.parametrize("bad", [{"collect_confirm_fraction": 0.0}, {"collect_min_points": 0},
                                 {"collect_grace_s": -1.0}, {"collect_max_wait_s": -1.0}])
def test_bad_followup_settings_are_refused(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="collect_"):
        dataclasses.replace(POLICY.settings, **bad).validate()
