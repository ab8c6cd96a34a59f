"""FeedbackRepository (cloud/store/feedback.py) statement by statement, on both store back ends."""

from __future__ import annotations

import pytest

from cloud.feedback.clock import LIVE_SLACK_S, data_clock_offsets
from cloud.store.db import CloudStore
from cloud.store.feedback import FeedbackRepository


@pytest.fixture
def repo(any_store: CloudStore) -> FeedbackRepository:
    return FeedbackRepository(any_store.backend)


def alert(repo: FeedbackRepository, alert_id: str, ind: str = "rex", ts: float = 100.0, *, state: str = "notified",
          notified_at: float | None = 100.0, metrics: str = '["hr_rest"]', incident_id: str | None = None) -> None:
    repo.b.execute("INSERT INTO alerts (alert_id, device_id, individual_id, ts, state, notified_at, metrics, "
                   "model_version, incident_id) VALUES (?, 'dev1', ?, ?, ?, ?, ?, 'm1', ?)",
                   [alert_id, ind, ts, state, notified_at, metrics, incident_id])


def record(repo: FeedbackRepository, seq: int, ind: str, ts: float, received_at: float, kind: str = "event",
           device_id: str = "dev1") -> None:
    repo.b.execute("INSERT INTO records (device_id, incarnation, seq, kind, ts, individual_id, body, received_at) "
                   "VALUES (?, '', ?, ?, ?, ?, ?, ?)",
                   [device_id, seq, kind, ts, ind, f'{{"model_version": "m{seq}"}}', received_at])


def test_alert_reads_and_updates(repo: FeedbackRepository) -> None:
    assert repo.alert("nope") is None
    repo.b.execute("INSERT INTO incidents (incident_id, individual_id, answered) VALUES ('inc:a', 'rex', 0)")
    alert(repo, "a", ts=100.0, incident_id="inc:a")
    alert(repo, "b", ts=200.0, notified_at=150.0, state="delivered")
    alert(repo, "c", ts=300.0, notified_at=None, state="held")
    alert(repo, "d", ind="bella", ts=50.0, notified_at=50.0)
    got = repo.alert("a")
    assert got is not None and (got["individual_id"], got["state"], got["model_version"]) == ("rex", "notified", "m1")
    repo.set_alert_state("a", "confirmed")
    repo.mark_incident_answered("inc:a")
    assert repo.alert("a")["state"] == "confirmed"  # type: ignore[index]
    assert repo.b.execute("SELECT answered FROM incidents WHERE incident_id = 'inc:a'").fetchone()[0] == 1
    assert [a["alert_id"] for a in repo.unanswered_alerts(150.0)] == ["d", "b"]  # oldest notification first
    assert [a["alert_id"] for a in repo.alerts_of("rex", 10)] == ["c", "b", "a"]
    assert [a["alert_id"] for a in repo.alerts_of("rex", 2)] == ["c", "b"]
    assert [a["alert_id"] for a in repo.alerts_of("rex", 10, since=200.0)] == ["c", "b"]
    assert [a["alert_id"] for a in repo.alerts_between(None, None)] == ["d", "a", "b", "c"]
    assert [a["alert_id"] for a in repo.alerts_between(100.0, 300.0)] == ["a", "b"]


def test_feedback_is_stored_once_and_verdicts_are_ordered(repo: FeedbackRepository) -> None:
    alert(repo, "a")
    fid = repo.add_feedback("a", "rex", "dev1", "confirm", "", 110.0, "m1", 111.0)
    assert isinstance(fid, int)
    assert repo.add_feedback("a", "rex", "dev1", "confirm", "", 110.0, "m1", 112.0) is None  # redelivered
    assert repo.add_feedback("a", "rex", "dev1", "acted", "", 105.0, "m1", 112.0) not in (None, fid)
    assert repo.add_feedback("", "rex", "dev1", "label", "missed", 120.0, None, 121.0) is not None
    assert repo.has_later_verdict("a", 100.0) and not repo.has_later_verdict("a", 110.0)
    assert repo.answers() == [("a", "acted", 105.0, 112.0), ("a", "confirm", 110.0, 111.0)]


def test_dismissals_are_found_until_consumed(repo: FeedbackRepository) -> None:
    alert(repo, "a", state="dismissed")
    alert(repo, "b", state="dismissed")
    alert(repo, "c", state="confirmed")  # dismissed, then confirmed: not counted
    alert(repo, "o", state="dismissed", metrics='["sleep"]')
    ids = [repo.add_feedback(a, "rex", "dev1", "dismiss", "", t, "m1", t) for a, t in
           (("b", 20.0), ("a", 10.0), ("c", 15.0), ("o", 12.0))]
    got = repo.unconsumed_dismissals("rex", '["hr_rest"]', 0.0, 20.0)
    assert [(d["alert_id"], d["fid"]) for d in got] == [("a", ids[1]), ("b", ids[0])]
    assert got[0]["metrics"] == '["hr_rest"]' and got[0]["device_id"] == "dev1"
    assert [d["alert_id"] for d in repo.unconsumed_dismissals("rex", '["hr_rest"]', 10.0, 20.0)] == ["b"]
    pid = repo.add_personalisation({"individual_id": "rex", "device_id": "dev1", "metric": "hr_rest",
                                    "action": "widen", "factor": 1.5, "reason": "r", "ts": 20.0, "direction": 1,
                                    "threshold": 9.0, "alert_id": "b"})
    repo.consume([int(d["fid"]) for d in got], pid)
    repo.consume([], pid)  # nothing to mark
    assert repo.unconsumed_dismissals("rex", '["hr_rest"]', 0.0, 20.0) == []
    assert repo.b.execute("SELECT COUNT(*) FROM feedback WHERE consumed_by = ?", [pid]).fetchone()[0] == 2


def test_personalisation_rows_commands_and_thresholds(any_store: CloudStore, repo: FeedbackRepository) -> None:
    def add(ind: str, metric: str, direction: int, threshold: float | None) -> int:
        return repo.add_personalisation({"individual_id": ind, "device_id": f"dev-{ind}", "metric": metric,
                                         "action": "widen", "factor": 1.5, "reason": "r", "ts": 1.0,
                                         "direction": direction, "threshold": threshold, "alert_id": "x"})

    ids = [add("rex", "hr_rest", 1, 9.0), add("rex", "hr_rest", 1, 12.0), add("rex", "activity", -1, None),
           add("bella", "hr_rest", 0, 3.0)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    claimed = repo.claim_unsent(50.0)
    assert [r["id"] for r in claimed] == ids and {r["command_sent_at"] for r in claimed} == {50.0}
    assert repo.claim_unsent(51.0) == []  # handed out once
    later = add("rex", "sleep", -1, 2.0)
    assert [r["id"] for r in repo.claim_unsent(52.0)] == [later]
    assert [r["id"] for r in repo.personalisations()] == [*ids, later]
    assert [r["id"] for r in repo.personalisations("bella")] == [ids[3]]
    assert repo.personal_thresholds("rex") == {("hr_rest", 1): 12.0, ("sleep", -1): 2.0}
    assert FeedbackRepository(any_store.backend).personal_thresholds("bella") == {("hr_rest", 0): 3.0}
    assert repo.personal_thresholds("ghost") == {}


def test_record_reads_for_unprompted_labels_and_the_data_clock(any_store: CloudStore,
                                                               repo: FeedbackRepository) -> None:
    assert repo.latest_record("rex") is None and data_clock_offsets(any_store.backend) == {}
    record(repo, 1, "rex", 100.0, 100.0 + 10 * LIVE_SLACK_S)
    record(repo, 2, "rex", 200.0, 200.0 + 20 * LIVE_SLACK_S, kind="summary", device_id="dev2")
    record(repo, 3, "bella", 500.0, 510.0)
    assert repo.latest_record("rex") == ("dev1", '{"model_version": "m1"}')  # an event beats a newer summary
    assert repo.latest_record("bella") == ("dev1", '{"model_version": "m3"}')
    assert sorted(repo.newest_record_lags()) == [("bella", 10.0), ("rex", 20 * LIVE_SLACK_S)]
    assert data_clock_offsets(any_store.backend) == {"bella": 0.0, "rex": 20 * LIVE_SLACK_S}  # bella is live
