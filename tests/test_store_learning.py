"""The learning loop's repositories on both back ends: regression cases and release checks, the
evidence reads (alerts, feedback, records), and retraining requests with their evaluation log."""

from __future__ import annotations

import json

from recs import record_of

from cloud.regression.evidence import labelled, load_alerts, load_feedback
from cloud.regression.fixtures import add_alert, add_feedback
from cloud.store.db import CloudStore
from cloud.store.regression import EvidenceRepository, RegressionRepository
from cloud.store.retrain import RetrainRepository
from shared.schemas import UplinkBatch

NOW = 1_800_000_000.0
EVENT = {"start_ts": NOW, "ts": NOW, "metrics": ["resting_hr"], "directions": [1], "score": 0.5, "severity": "warning"}
SUMMARY = {"day": "d0", "minutes": 1440, "steps": 5000, "metrics_mean": {"resting_hr": 60.0}}


def _case(key: str, **kw: object) -> dict[str, object]:
    return {"kind": "miss", "individual_id": "ind-1", "device_id": "dev-1", "seq": 2**40, "alert_id": key,
            "feedback_id": 1, "source_key": key, "model_version": "1", "window": json.dumps({"raw": []}),
            "expected": "alert", "sensitive": 0, "sensitive_reason": "", "created": NOW, "source": "{}", **kw}


def test_cases_are_inserted_once_read_back_and_marked(any_store: CloudStore) -> None:
    repo = RegressionRepository(any_store.backend)
    first = repo.insert_case(_case("alert:a"))
    second = repo.insert_case(_case("alert:b", expected="no_alert"))
    assert first is not None and second is not None and second > first
    assert repo.insert_case(_case("alert:a", kind="false_alarm")) is None  # the same source: once
    assert repo.case_keys() == {"alert:a", "alert:b"}
    rows = repo.cases()
    assert [r["source_key"] for r in rows] == ["alert:a", "alert:b"]
    assert rows[0]["seq"] == 2**40 and rows[0]["window"] == '{"raw": []}' and rows[0]["kind"] == "miss"
    assert repo.case(999) is None
    repo.mark_sensitive(first, "vet confirmed")
    row = repo.case(first)
    assert row is not None and row["sensitive"] == 1 and row["sensitive_reason"] == "vet confirmed"


def test_release_checks_and_the_passed_lookup(any_store: CloudStore) -> None:
    repo = RegressionRepository(any_store.backend)

    def check(passed: int, sha: str | None, det: str | None) -> int:
        return repo.insert_check({"created": NOW, "candidate_name": "collar", "candidate_version": "2",
                                  "candidate_sha256": sha, "candidate_detector_sha256": det, "current_name": None,
                                  "current_version": None, "passed": passed, "score_candidate": 1.0,
                                  "score_current": None, "n_cases": 0, "reasons": "[]", "outcomes": "[]"})

    assert repo.passed_check_id("collar", "2", "") is None
    blocked = check(0, "ab", "d1")
    assert repo.passed_check_id("collar", "2", "ab") is None
    ok = check(1, "ab", "d1")
    assert ok > blocked
    assert repo.passed_check_id("collar", "2", "ab") == ok
    assert repo.passed_check_id("collar", "2", "ab", "d1") == ok
    assert repo.passed_check_id("collar", "2", "ab", "d2") is None  # another detector config
    assert repo.passed_check_id("collar", "2", "cd") is None  # another model file
    custom = check(1, None, "")  # a custom replayer: no config hash, matches any config
    assert repo.passed_check_id("collar", "2", "", "d2") == custom
    row = repo.check(ok)
    assert row is not None and row["passed"] == 1 and row["score_current"] is None


def test_evidence_reads_filter_and_order(any_store: CloudStore) -> None:
    ev = EvidenceRepository(any_store.backend)
    add_alert(any_store, "b", NOW - 10, seq=7)
    add_alert(any_store, "a", NOW - 10)
    add_alert(any_store, "c", NOW - 100)
    ids = [add_feedback(any_store, "a", "confirm", NOW - 5), add_feedback(any_store, "b", "ignored", NOW - 5),
           add_feedback(any_store, "c", "dismiss", NOW + 5), add_feedback(any_store, None, "label", NOW - 50,
                                                                          label="missed")]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [a["alert_id"] for a in ev.alerts()] == ["c", "a", "b"]  # by ts, then id
    assert [a["alert_id"] for a in ev.alerts(NOW - 10)] == ["a", "b"]
    assert [a["alert_id"] for a in ev.alerts(where="seq = ?", args=[7])] == ["b"]
    assert [f["id"] for f in ev.feedback(NOW)] == [ids[3], ids[0], ids[1]]
    assert [f["alert_id"] for f in ev.feedback(NOW, ("confirm", "dismiss"))] == ["a"]
    assert [f["alert_id"] for f in ev.feedback(NOW + 10, ("confirm", "dismiss"), NOW - 20)] == ["a", "c"]
    # the module functions take the store or its back end
    for source in (any_store, any_store.backend):
        assert [a["alert_id"] for a in load_alerts(source, "ts >= ?", [NOW - 10])] == ["a", "b"]
        assert [f["action"] for f in load_feedback(source, NOW, "action = ?", ["label"])] == ["label"]
        assert [(i.alert_id, i.outcome) for i in labelled(source, NOW)] == [(None, "miss"), ("a", "tp")]


def test_evidence_records(any_store: CloudStore) -> None:
    any_store.store_batch(UplinkBatch("dev-1", (
        record_of(1, "event", NOW, "ind-1", EVENT),
        *(record_of(10 + i, "raw", NOW - 100 + i, "ind-1", {"minute_ts": NOW, "metrics": [60]}) for i in range(5)),
    )))
    ev = EvidenceRepository(any_store.backend)
    row = ev.record("dev-1", "", 1)
    assert row is not None and row["kind"] == "event" and json.loads(row["body"])["score"] == 0.5
    assert ev.record("dev-1", "", 2) is None
    assert [r["seq"] for r in ev.raw_records("dev-1", NOW - 99, NOW, 3)] == [11, 12, 13]
    assert ev.raw_records("dev-2", 0, NOW, 10) == []


def test_retrain_requests_and_evaluations(any_store: CloudStore) -> None:
    repo = RetrainRepository(any_store.backend)
    assert repo.last_request("p", "collar", "1") is None and repo.requests() == []

    def ev(outcome: str, ts: float) -> dict[str, object]:
        return {"ts": ts, "rule": "p", "model_name": "collar", "model_version": "1", "outcome": outcome,
                "reason": "why", "measured": "{}"}

    repo.add_evaluation(ev("not_met", NOW))
    rid = repo.add_request({"model_name": "collar", "model_version": "1", "rule": "p", "kind": "precision",
                            "reason": "why", "measured": "{}", "created": NOW + 1, "dataset_path": "/d",
                            "status": "open"}, ev("fired", NOW + 1))
    repo.add_evaluation({**ev("no_model", NOW + 2), "rule": "q", "model_version": None})
    assert repo.last_request("p", "collar", "1") == NOW + 1
    assert repo.last_request("p", "collar", "2") is None
    assert [(r["id"], r["status"]) for r in repo.requests()] == [(rid, "open")]
    log = repo.evaluations()
    assert [e["outcome"] for e in log] == ["not_met", "fired", "no_model"]
    assert log[0]["request_id"] is None and log[1]["request_id"] == rid and log[2]["model_version"] is None
    assert [e["outcome"] for e in repo.evaluations("q")] == ["no_model"]


def test_retrain_reads_versions_and_records(any_store: CloudStore) -> None:
    repo = RetrainRepository(any_store.backend)
    assert repo.fleet_version("collar") is None and repo.newest_alert_version(NOW) is None
    add_alert(any_store, "a", NOW - 10, model_version="1")
    add_alert(any_store, "b", NOW + 10, model_version="2")
    assert repo.newest_alert_version(NOW) == "1"
    for version, sha, status, updated in (("3", "s3", "fleet", NOW), ("4", "s3", "fleet", NOW + 1),
                                          ("5", "", "canary", NOW + 2)):
        any_store.backend.execute("INSERT INTO releases (name, version, sha256, status, updated) VALUES (?, ?, ?, ?, ?)",
                                  ["collar", version, sha, status, updated])
    assert repo.fleet_version("collar") == "4" and repo.fleet_version("other") is None
    assert repo.release_sha256("collar", "3") == "s3"
    assert repo.release_sha256("collar", "5") is None and repo.release_sha256("collar", "9") is None
    assert repo.other_releases_with_sha256("collar", "s3", "3") == 1
    any_store.store_batch(UplinkBatch("dev-1", (
        record_of(1, "summary", NOW - 5, "ind-1", SUMMARY),
        record_of(2, "summary", NOW + 5, "ind-1", SUMMARY),
        record_of(3, "event", NOW, "ind-1", EVENT),
    )))
    assert [r["ts"] for r in repo.summaries(NOW - 5, NOW)] == [NOW - 5]
    assert json.loads(repo.summaries(NOW, NOW + 5)[0]["body"])["minutes"] == 1440
    (event,) = repo.events()
    assert (event["device_id"], event["incarnation"], event["seq"]) == ("dev-1", "", 3)


def test_the_learning_tables_exist_when_the_store_opens(any_store: CloudStore) -> None:
    for table in ("retrain_requests", "retrain_evaluations", "regression_cases", "release_checks"):
        assert any_store.backend.query(f"SELECT * FROM {table} LIMIT 0") == []
