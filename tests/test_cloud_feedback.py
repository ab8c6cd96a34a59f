"""Feedback: recording, state changes, named errors, implicit ignore sweep, personalisation
commands and their effect on later decisions, the MQTT route and the HTTP endpoint; on both
store back ends (``any_store``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recs import record_of

from cloud.feedback import (
    ERROR_COUNTS,
    InvalidFeedbackError,
    UnknownAlertError,
    WrongIndividualError,
    feedback_from_mqtt,
    implicit_sweep,
    list_alerts,
    personalisation_commands,
    record_feedback,
)
from cloud.feedback.http import start_feedback_server
from cloud.rules.notify import NotificationPolicy, due_renotifications, handle_event
from cloud.store.db import CloudStore
from shared import topics
from shared.schemas import Feedback, UplinkBatch, encode

DAY = 86400.0
NOON = 10 * DAY + 12 * 3600
POLICY = NotificationPolicy.from_toml()
_seq = iter(range(1, 10**9))


def event(store, t=NOON, ind="rex", dev="dev1", **kw):
    b = {"start_ts": t - 3600, "ts": t, "metrics": ["hr_rest", "activity"], "directions": [1, -1],
         "score": 0.8, "severity": "warning", "kind": "sustained", "baseline": [60.0, 1.0],
         "observed": [75.0, 0.5], "model_version": "m1", "detector_version": "d1"}
    b.update(kw)
    rec = record_of(seq=next(_seq), kind="event", ts=t, individual_id=ind, body=b)
    store.store_batch(UplinkBatch(device_id=dev, records=(rec,)))
    return handle_event(store, POLICY, dev, rec)


def fb(d, action, ts, label="", ind=None):
    return Feedback(alert_id=d.alert_id, individual_id=ind or d.individual_id, action=action,
                    ts=ts, label=label)


@pytest.fixture
def store(any_store):
    return any_store


def row(store, table, key, value):
    (r,) = store.backend.query(f"SELECT * FROM {table} WHERE {key} = ?", [value])
    return r


def count(store, table, where="1 = 1"):
    return store.backend.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0]


def state(store, d):
    return row(store, "alerts", "alert_id", d.alert_id)["state"]


# ----------------------------------------------------------------- recording and states

def test_confirm_is_stored_with_model_version_and_answers_the_incident(store):
    d = event(store, severity="critical", score=0.9)
    res = record_feedback(store, fb(d, "confirm", NOON + 60))
    assert (res.state, res.duplicate, res.action) == ("confirmed", False, "confirm")
    f = row(store, "feedback", "id", res.feedback_id)
    assert (f["alert_id"], f["individual_id"], f["device_id"], f["model_version"]) == \
        (d.alert_id, "rex", "dev1", "m1")
    inc = row(store, "incidents", "incident_id", d.incident_id)
    assert inc["answered"] == 1 and inc["closed_at"] is None
    assert due_renotifications(store, POLICY, NOON + 5 * 3600) == []


def test_dismiss_closes_the_incident_and_label_keeps_the_verdict(store):
    d = event(store)
    assert record_feedback(store, fb(d, "dismiss", NOON + 60)).state == "dismissed"
    assert row(store, "incidents", "incident_id", d.incident_id)["closed_at"] == NOON + 60
    res = record_feedback(store, fb(d, "label", NOON + 70, label="zoomies after the park"))
    assert res.state == "dismissed"
    assert row(store, "feedback", "id", res.feedback_id)["label"] == "zoomies after the park"


def test_implicit_signals_move_state_but_never_override_a_verdict(store):
    d = event(store)
    assert record_feedback(store, fb(d, "delivered", NOON + 1)).state == "delivered"
    assert record_feedback(store, fb(d, "opened", NOON + 5)).state == "opened"
    assert record_feedback(store, fb(d, "delivered", NOON + 6)).state == "opened"
    assert record_feedback(store, fb(d, "confirm", NOON + 10)).state == "confirmed"
    assert record_feedback(store, fb(d, "acted", NOON + 20)).state == "confirmed"
    # the latest verdict by time wins, whatever order they arrive in
    assert record_feedback(store, fb(d, "dismiss", NOON + 5)).state == "confirmed"
    assert record_feedback(store, fb(d, "dismiss", NOON + 30)).state == "dismissed"


def test_redelivered_feedback_is_stored_once(store):
    d = event(store)
    first = record_feedback(store, fb(d, "confirm", NOON + 60))
    again = record_feedback(store, fb(d, "confirm", NOON + 60))
    assert again.duplicate and again.feedback_id is None and first.feedback_id is not None
    assert count(store, "feedback") == 1


# ----------------------------------------------------------------- named errors, counted

@pytest.mark.parametrize(("make", "err", "needle"), [
    (lambda d: Feedback(alert_id="dev9:999", individual_id="rex", action="confirm", ts=1.767e9),
     UnknownAlertError, "unknown"),
    (lambda d: fb(d, "confirm", NOON, ind="bella"), WrongIndividualError, "another individual"),
    (lambda d: fb(d, "shrug", NOON), InvalidFeedbackError, "shrug"),
    (lambda d: fb(d, "label", NOON), InvalidFeedbackError, "non-empty label"),
    (lambda d: fb(d, "confirm", float("nan")), InvalidFeedbackError, "finite"),
    (lambda d: fb(d, "confirm", 32503680000.0), InvalidFeedbackError, "days after the cloud's clock"),  # year 3000
    (lambda d: fb(d, "label", NOON, label="x" * 500), InvalidFeedbackError, "200"),
])
def test_bad_feedback_is_a_named_one_line_counted_error(store, make, err, needle):
    d = event(store)
    before = ERROR_COUNTS[err.__name__]
    with pytest.raises(err) as ei:
        record_feedback(store, make(d))
    assert needle in str(ei.value) and "\n" not in str(ei.value)
    assert ERROR_COUNTS[err.__name__] == before + 1
    assert count(store, "rejections") == 1
    assert count(store, "feedback") == 0 and state(store, d) == "notified"


@settings(max_examples=30, deadline=None)
@given(alert_id=st.text(max_size=12), action=st.text(max_size=12), ts=st.floats(allow_nan=True),
       label=st.text(max_size=20))
def test_arbitrary_feedback_never_crashes(alert_id, action, ts, label):
    s = CloudStore()
    d = event(s)
    try:
        record_feedback(s, Feedback(alert_id=alert_id or d.alert_id, individual_id="rex",
                                    action=action, ts=ts, label=label))
    except (InvalidFeedbackError, UnknownAlertError, WrongIndividualError):
        assert count(s, "rejections") == 1
    s.close()


# ----------------------------------------------------------------- implicit ignore

def test_implicit_sweep_marks_untouched_notified_alerts_ignored(store):
    a = event(store, ind="a")
    b = event(store, ind="b")
    c = event(store, ind="c")
    held = event(store, ind="d", score=0.2)
    record_feedback(store, fb(b, "opened", NOON + 100))
    record_feedback(store, fb(c, "delivered", NOON + 100))
    after = POLICY.settings.ignore_after_s
    assert implicit_sweep(store, NOON + after - 1) == 0
    assert implicit_sweep(store, NOON + after, after) == 2
    assert (state(store, a), state(store, b), state(store, c), state(store, held)) == \
        ("ignored", "opened", "ignored", "held")
    ign = store.backend.query("SELECT * FROM feedback WHERE action = 'ignored'")
    assert sorted(r["alert_id"] for r in ign) == sorted([a.alert_id, c.alert_id])
    assert implicit_sweep(store, NOON + 2 * after, after) == 0  # once only
    # an owner who acts late still counts
    assert record_feedback(store, fb(a, "acted", NOON + after + 5)).state == "acted"


# ----------------------------------------------------------------- personalisation

def test_normal_for_her_sends_a_config_command_and_changes_later_decisions(store):
    d = event(store, metrics=["hr_rest"], directions=[1], baseline=[60.0], observed=[72.0], score=0.7)
    assert d.action == "notify"
    res = record_feedback(store, fb(d, "normal_for_her", NOON + 60))
    assert len(res.personalisation_ids) == 1
    assert row(store, "incidents", "incident_id", d.incident_id)["closed_at"] == NOON + 60
    cmds = personalisation_commands(store, NOON + 61)
    assert cmds == [("dev1", "config", {
        "individual_id": "rex", "action": "accept_new_normal", "metric": "hr_rest", "factor": 1.25,
        "direction": 1, "threshold": 15.0, "personalisation_id": res.personalisation_ids[0],
        "reason": f"owner said normal for her on alert {d.alert_id}"})]
    assert personalisation_commands(store, NOON + 62) == []  # handed out once
    # later: the same level (and a bit more) is personalised; well beyond it still notifies;
    # another individual is unaffected
    t = NOON + 3 * 3600
    inside = event(store, t=t, metrics=["hr_rest"], directions=[1], baseline=[60.0],
                   observed=[74.0], score=0.7)
    assert (inside.action, inside.rule) == ("suppress", "personalised")
    beyond = event(store, t=t + 5, metrics=["hr_rest"], directions=[1], baseline=[60.0],
                   observed=[90.0], score=0.9, start_ts=t - 100)
    assert beyond.action == "notify"
    other = event(store, t=t, ind="bella", dev="dev2", metrics=["hr_rest"], directions=[1],
                  baseline=[60.0], observed=[74.0], score=0.7)
    assert other.action == "notify"


def test_two_dismissals_of_the_same_metric_set_widen_on_that_device_only(store):
    d1 = event(store)  # hr_rest +15, activity -0.5
    assert record_feedback(store, fb(d1, "dismiss", NOON + 60)).personalisation_ids == ()
    assert personalisation_commands(store, NOON + 61) == []
    # a dismissal of a different metric set does not count towards it
    other = event(store, t=NOON + DAY, metrics=["sleep"], directions=[-1], baseline=[10.0],
                  observed=[7.0], score=0.7)
    record_feedback(store, fb(other, "dismiss", NOON + DAY + 60))
    assert personalisation_commands(store, NOON + DAY + 61) == []
    d2 = event(store, t=NOON + 2 * DAY, observed=[78.0, 0.4])  # hr_rest +18, activity -0.6
    res = record_feedback(store, fb(d2, "dismiss", NOON + 2 * DAY + 60))
    assert len(res.personalisation_ids) == 2
    cmds = personalisation_commands(store, NOON + 2 * DAY + 61)
    assert {(dev, name, a["action"], a["metric"], a["direction"]) for dev, name, a in cmds} == {
        ("dev1", "config", "widen", "hr_rest", 1), ("dev1", "config", "widen", "activity", -1)}
    th = {a["metric"]: a["threshold"] for _, _, a in cmds}
    assert th["hr_rest"] == pytest.approx(18 * 1.5) and th["activity"] == pytest.approx(0.6 * 1.5)
    assert all(a["factor"] == 1.5 and a["individual_id"] == "rex" for _, _, a in cmds)
    # effect on the next decision
    t = NOON + 3 * DAY
    nxt = event(store, t=t, observed=[80.0, 0.3])  # +20 <= 27, -0.7 <= 0.9
    assert (nxt.action, nxt.rule) == ("suppress", "personalised")
    assert nxt.reason.startswith("personalised")
    # the dismissals were used up: one more dismissal does not widen again
    d3 = event(store, t=t + DAY, observed=[95.0, 0.5], start_ts=t)
    assert d3.action == "notify"
    assert record_feedback(store, fb(d3, "dismiss", t + DAY + 60)).personalisation_ids == ()


def test_dismissals_outside_the_window_or_later_confirmed_do_not_widen(store):
    d1 = event(store)
    record_feedback(store, fb(d1, "dismiss", NOON + 60))
    late = NOON + POLICY.settings.dismissal_window_s + DAY
    d2 = event(store, t=late)
    assert record_feedback(store, fb(d2, "dismiss", late + 60)).personalisation_ids == ()
    d3 = event(store, t=late + DAY)
    record_feedback(store, fb(d2, "confirm", late + 120))  # owner changed their mind on d2
    assert record_feedback(store, fb(d3, "dismiss", late + DAY + 60)).personalisation_ids == ()


# ----------------------------------------------------------------- MQTT route

def test_feedback_from_mqtt(store):
    d = event(store)
    res = feedback_from_mqtt(store, topics.owner_feedback("rex"), encode(fb(d, "confirm", NOON + 9)))
    assert res.state == "confirmed"
    with pytest.raises(WrongIndividualError):
        feedback_from_mqtt(store, topics.owner_feedback("bella"), encode(fb(d, "dismiss", NOON + 10)))
    with pytest.raises(InvalidFeedbackError):
        feedback_from_mqtt(store, topics.owner_feedback("rex"), b"{not json")
    with pytest.raises(InvalidFeedbackError):
        feedback_from_mqtt(store, "edgeloop/v1/elsewhere", encode(fb(d, "dismiss", NOON + 10)))
    for junk in (b"[" * 100000, b'{"v":1,"type":[1]}', b'{"v":1,"type":{"a":1}}', b"\xff\xfe"):
        with pytest.raises(InvalidFeedbackError):
            feedback_from_mqtt(store, topics.owner_feedback("rex"), junk)
    assert count(store, "rejections") == 7


# ----------------------------------------------------------------- HTTP endpoint

def _http(url, data=None):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_endpoint(store_url):
    path = store_url
    s = CloudStore(path)
    d = event(s)
    s.close()
    server = start_feedback_server(path, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        ok = {"alert_id": d.alert_id, "individual_id": "rex", "action": "confirm", "ts": NOON + 5}
        assert _http(base + "/feedback", json.dumps(ok).encode()) == (
            200, {"ok": True, "feedback_id": 1, "state": "confirmed", "duplicate": False,
                  "personalisation_ids": []})
        code, body = _http(base + "/feedback", json.dumps(dict(ok, alert_id="x:1")).encode())
        assert (code, body["error"]) == (404, "UnknownAlertError")
        code, body = _http(base + "/feedback", json.dumps(dict(ok, individual_id="bella")).encode())
        assert (code, body["error"]) == (403, "WrongIndividualError")
        code, body = _http(base + "/feedback", json.dumps(dict(ok, action="meh")).encode())
        assert (code, body["error"]) == (400, "InvalidFeedbackError") and "meh" in body["message"]
        for junk in (b"[1, 2", b"[" * 50000, b'{"type": [1]}', b'{"ts": {"a": 1}}'):
            code, body = _http(base + "/feedback", junk)
            assert (code, body["error"]) == (400, "InvalidFeedbackError"), junk[:20]
        code, body = _http(base + "/alerts?individual_id=rex")
        assert code == 200 and [a["alert_id"] for a in body["alerts"]] == [d.alert_id]
        assert body["alerts"][0]["state"] == "confirmed" and body["alerts"][0]["metrics"] == ["activity", "hr_rest"]
        assert _http(base + "/alerts?individual_id=a/b")[0] == 400
        assert _http(base + "/nope")[0] == 404
        assert _http(base + "/healthz") == (200, {"ok": True})
    finally:
        server.stop()
    s = CloudStore(path)
    assert count(s, "rejections") == 7
    assert list_alerts(s, "rex")[0]["state"] == "confirmed"
    s.close()


def test_unprompted_missed_label_is_stored_for_the_individuals_device_and_model(store):
    from cloud.feedback import UnknownIndividualError

    event(store, model_version="m3")
    res = record_feedback(store, Feedback(alert_id="", individual_id="rex", action="label",
                                          ts=NOON + 99, label="missed"))
    f = row(store, "feedback", "id", res.feedback_id)
    assert (f["alert_id"], f["device_id"], f["model_version"], f["label"]) == \
        ("", "dev1", "m3", "missed")
    assert record_feedback(store, Feedback(alert_id="", individual_id="rex", action="label",
                                           ts=NOON + 99, label="missed")).duplicate
    with pytest.raises(UnknownIndividualError):
        record_feedback(store, Feedback(alert_id="", individual_id="ghost", action="label",
                                        ts=NOON, label="missed"))
    with pytest.raises(InvalidFeedbackError, match="only action 'label'"):
        record_feedback(store, Feedback(alert_id="", individual_id="rex", action="confirm", ts=NOON))
    assert count(store, "rejections") == 2


def test_periodic_sends_reminders_sweeps_and_hands_out_commands(store):
    from cloud.feedback import periodic
    from cloud.notifiers import LogNotifier

    crit = event(store, severity="critical", score=0.95)
    calm = event(store, ind="bella", dev="dev2")
    record_feedback(store, fb(calm, "normal_for_her", NOON + 30))
    log = LogNotifier()
    r1 = periodic(store, POLICY, NOON + 60, [log])
    assert (r1.reminders, r1.ignored, [c[:2] for c in r1.commands]) == ((), 0, [("dev2", "config")] * 2)
    r2 = periodic(store, POLICY, NOON + POLICY.settings.renotify_after_s, [log])
    assert [d.alert_id for d in r2.reminders] == [crit.alert_id] and r2.commands == ()
    assert log.payloads[0]["reminder"] is True and log.payloads[0]["severity"] == "critical"
    r3 = periodic(store, POLICY, NOON + POLICY.settings.ignore_after_s, [log])
    assert r3.ignored == 1 and state(store, crit) == "ignored"
