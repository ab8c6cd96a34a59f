"""Inherited regression cases, the threshold replayer and the release check (no broker)."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from recs import record_of

import cloud.regression as reg
from cloud.regression import (
    AlertGate,
    EventNumbers,
    RegressionConfig,
    ReleaseRef,
    ReplayError,
    ThresholdReplayer,
    capture_cases,
    check_release,
    list_cases,
    mark_sensitive,
    passed_check_id,
    window_numbers,
)
from cloud.regression.fixtures import add_alert, add_feedback
from cloud.releases import register_release, release_check_cli
from cloud.store.db import CloudStore
from shared import bundles, signing
from shared.codec import from_json, to_json
from shared.records import Event
from shared.schemas import UplinkBatch

D = 86400.0
NOW = 1_800_000_000.0


def _history(store: CloudStore) -> None:
    """tp, fp (dismiss), fp (normal_for_her), miss (confirm on a held alert), miss (label),
    owner-reported miss without alert, implicit-only alert."""
    add_alert(store, "tp", NOW - 9 * D, score=0.9, metrics={"resting_hr": (80, 60)})
    add_feedback(store, "tp", "confirm", NOW - 8 * D)
    add_alert(store, "fp1", NOW - 7 * D, score=0.4, metrics={"resting_hr": (63, 60)}, seq=7,
              device_id="dev-2", individual_id="ind-2")
    add_feedback(store, "fp1", "dismiss", NOW - 6 * D, device_id="dev-2", individual_id="ind-2")
    add_alert(store, "fp2", NOW - 7 * D + 1, score=0.5, severity="critical", metrics={"steps": (5000, 6000)})
    add_feedback(store, "fp2", "normal_for_her", NOW - 6 * D)
    add_alert(store, "miss1", NOW - 5 * D, action="suppress", score=0.3, metrics={"resting_hr": (75, 60)})
    add_feedback(store, "miss1", "confirm", NOW - 4 * D)
    add_alert(store, "miss2", NOW - 5 * D + 1, score=0.6, metrics={"resting_hr": (66, 60)})
    add_feedback(store, "miss2", "label", NOW - 4 * D, label="missed")
    add_feedback(store, None, "label", NOW - 3 * D, label="missed", model_version="1")
    add_alert(store, "quiet", NOW - 2 * D)
    add_feedback(store, "quiet", "ignored", NOW - D)


def test_capture_turns_confirmed_misses_and_false_alarms_into_cases_once(any_store: CloudStore) -> None:
    store = any_store
    store.store_batch(UplinkBatch("dev-2", (
        record_of(7, "event", NOW - 7 * D, "ind-2", {"start_ts": NOW - 7 * D, "ts": NOW - 7 * D,
                                                     "metrics": ["resting_hr"], "directions": [1], "score": 0.4,
                                                     "severity": "warning"}),
        record_of(8, "raw", NOW - 7 * D - 600, "ind-2", {"minute_ts": NOW - 7 * D - 600, "metrics": [60, 61]}),
        record_of(9, "raw", NOW - 7 * D - 10 * 3600, "ind-2", {"minute_ts": NOW, "metrics": [1]}),  # outside the pad
    )))
    _history(store)
    new = capture_cases(store, NOW)
    kinds = sorted((c.alert_id or "-", c.kind, c.expected) for c in new)
    assert kinds == [("-", "miss", "alert"), ("fp1", "false_alarm", "no_alert"),
                     ("fp2", "false_alarm", "no_alert"), ("miss1", "miss", "alert"),
                     ("miss2", "miss", "alert")]
    assert capture_cases(store, NOW + D) == []  # idempotent
    by = {c.alert_id: c for c in list_cases(store)}
    fp1 = by["fp1"]
    assert (fp1.device_id, fp1.individual_id, fp1.seq) == ("dev-2", "ind-2", 7)
    assert fp1.window["event"]["body"]["score"] == 0.4
    assert [r["seq"] for r in fp1.window["raw"]] == [8]
    assert fp1.source["feedback_action"] == "dismiss" and fp1.source["model_version"] == "1"
    assert not fp1.sensitive
    assert by["fp2"].sensitive and "severity critical" in by["fp2"].sensitive_reason
    assert by["miss1"].sensitive and "kind miss" in by["miss1"].sensitive_reason
    cfg = RegressionConfig(sensitive_kinds=(), sensitive_severities=())
    store2 = CloudStore()
    _history(store2)
    assert not any(c.sensitive for c in capture_cases(store2, NOW, cfg))


def test_feedback_after_now_and_superseded_feedback(any_store: CloudStore) -> None:
    store = any_store
    add_alert(store, "a", NOW - D)
    add_feedback(store, "a", "dismiss", NOW - 100)
    add_feedback(store, "a", "confirm", NOW - 50)  # the owner changed their mind: a true positive
    add_alert(store, "b", NOW - D)
    add_feedback(store, "b", "dismiss", NOW + 100)  # not yet happened at NOW
    assert capture_cases(store, NOW) == []
    assert [c.alert_id for c in capture_cases(store, NOW + 200)] == ["b"]


def test_cases_are_kept_forever(any_store: CloudStore) -> None:
    store = any_store
    _history(store)
    capture_cases(store, NOW)
    with pytest.raises(Exception, match="kept forever"):  # SQLite's trigger, or its PostgreSQL form
        store.backend.execute("DELETE FROM regression_cases")
    assert len(list_cases(store)) == 5
    assert not [n for n in dir(reg) if "delete" in n.lower() or "remove" in n.lower()]
    case = list_cases(store)[0]
    assert not case.sensitive
    mark_sensitive(store, case.id, "vet confirmed")
    assert list_cases(store)[0].sensitive and "vet confirmed" in list_cases(store)[0].sensitive_reason
    with pytest.raises(reg.CaseNotFoundError, match="not found"):
        mark_sensitive(store, 999, "x")


def test_case_numbers_from_the_event_record_else_the_alert_row() -> None:
    alert = {"score": 0.5, "metrics": '["hr", "steps"]', "observed": '{"hr": 66, "steps": 0}',
             "baseline": '{"hr": 60, "steps": 0}'}
    n = window_numbers(alert, None)
    assert n.score == 0.5 and n.devs == {"hr": pytest.approx(0.1), "steps": 0.0}
    body = {"start_ts": 0.0, "ts": 60.0, "metrics": ["hr"], "directions": [1], "score": 0.7,
            "severity": "warning", "baseline": [50.0], "observed": [60.0]}
    assert window_numbers(alert, body) == EventNumbers(0.7, {"hr": pytest.approx(0.2)}), "the event's own numbers"
    ev = from_json(Event, body, "event")
    assert EventNumbers.from_event(ev) == window_numbers(None, body)
    assert window_numbers(alert, {"score": 0.7}) == n, "an unreadable body: the alert row"
    assert window_numbers({"metrics": ["hr"], "score": 0.2}, None).devs == {"hr": None}
    assert window_numbers(None, None).empty


@pytest.mark.parametrize(("cfg", "numbers", "alerts"), [
    ({}, EventNumbers(0.1, {"hr": 0.01}), True),
    ({"min_score": 0.5}, EventNumbers(0.4, {"hr": 1.0}), False),
    ({"min_score": 0.5}, EventNumbers(0.5, {"hr": 1.0}), True),
    ({"metric_thresholds": {"hr": 0.2}}, EventNumbers(0.9, {"hr": 0.19}), False),
    ({"metric_thresholds": {"hr": 0.2}}, EventNumbers(0.9, {"hr": 0.19, "steps": 0.0}), True),
    ({"metric_thresholds": {"hr": 0.2}, "default_metric_threshold": 0.1},
     EventNumbers(0.9, {"hr": 0.19, "steps": 0.05}), False),
    ({"metric_thresholds": {"hr": 0.2, "steps": 0.2}, "min_metrics": 2},
     EventNumbers(0.9, {"hr": 0.3, "steps": 0.1}), False),
    ({"min_metrics": 2}, EventNumbers(0.9, {"hr": 0.3}), True),  # only one metric has numbers
    ({"metric_thresholds": {"hr": 5.0}}, EventNumbers(0.9, {"hr": None}), True),  # not judged
    ({"min_score": 0.9}, EventNumbers(None, {"hr": 0.3}), True),  # no score: score test skipped
    ({}, EventNumbers(None, {}), False),  # nothing recorded: never alerts
])
def test_alert_gate(cfg: dict, numbers: EventNumbers, alerts: bool) -> None:
    assert AlertGate.from_config(cfg).alerts(numbers) is alerts


@pytest.mark.parametrize(("cfg", "match"), [
    ({"min_score": 1.5}, r"min_score: expected a number in \[0, 1\]"),
    ({"metric_thresholds": {"hr": -1}}, r"metric_thresholds.hr: expected a number >= 0"),
    ({"metric_thresholds": [1]}, "expected a table"),
    ({"min_metrics": 0}, "min_metrics: expected an integer >= 1"),
])
def test_bad_detector_configs_are_named(cfg: dict, match: str) -> None:
    with pytest.raises(ReplayError, match=match):
        ThresholdReplayer(cfg)


def test_check_blocks_on_a_sensitive_regression_and_stores_the_verdict(any_store: CloudStore) -> None:
    store = any_store
    _history(store)
    capture_cases(store, NOW)
    current = {"min_score": 0.25}
    cand = {"min_score": 0.35}  # silences miss1 (score 0.3, a sensitive miss)
    res = check_release(store, cand, current, candidate_ref=ReleaseRef("collar", "2", "ab"),
                        current_ref=ReleaseRef("collar", "1"), now=NOW)
    assert not res.passed
    by = {o.case_id: o for o in res.outcomes}
    miss1 = next(c for c in list_cases(store) if c.alert_id == "miss1")
    assert by[miss1.id].status == "regression" and by[miss1.id].sensitive
    assert any(f"sensitive case {miss1.id}" in r for r in res.reasons)
    row = store.backend.execute("SELECT passed, reasons, n_cases FROM release_checks WHERE id = ?", [res.id]).fetchone()
    assert row[0] == 0 and json.loads(row[1]) == list(res.reasons) and row[2] == 5
    assert passed_check_id(store, ReleaseRef("collar", "2", "ab")) is None
    assert "BLOCKED" in res.table() and "regression" in res.table()


def test_check_blocks_on_a_lower_overall_score_but_allows_a_traded_non_sensitive_case(any_store: CloudStore) -> None:
    store = any_store
    _history(store)
    capture_cases(store, NOW, RegressionConfig(sensitive_kinds=(), sensitive_severities=()))
    cases = {c.alert_id: c for c in list_cases(store)}
    # fp1 (hr +5%), fp2 (steps -16.7%), miss1 (hr +25%), miss2 (hr +10%), orphan miss (no numbers)
    current = {"metric_thresholds": {"resting_hr": 0.2}}  # right: fp1, miss1 (2/5)
    worse = {"metric_thresholds": {"resting_hr": 0.3}}  # right: fp1 (1/5)
    res = check_release(store, worse, current)
    assert not res.passed and res.reasons == ("candidate gets 1/5 cases right (0.200), below current "
                                              "2/5 (0.400)",)
    traded = {"metric_thresholds": {"resting_hr": 0.04, "steps": 0.2}}  # loses fp1, fixes fp2 + miss2
    res = check_release(store, traded, current, candidate_ref=ReleaseRef("collar", "3", "cd"))
    assert res.passed and res.score_candidate > res.score_current  # type: ignore[operator]
    statuses = {o.case_id: o.status for o in res.outcomes}
    assert statuses[cases["fp2"].id] == "fixed" and statuses[cases["miss2"].id] == "fixed"
    assert statuses[cases["fp1"].id] == "regression"
    assert res.reasons[1] == f"non-sensitive regressions allowed by the overall score: cases [{cases['fp1'].id}]"
    assert statuses[cases[None].id] == "still_failing"  # an owner report without numbers
    assert passed_check_id(store, ReleaseRef("collar", "3", "cd")) == res.id
    strict = check_release(store, traded, current, strict=True)
    assert not strict.passed and any("strict" in r for r in strict.reasons)


def test_check_with_no_current_release_and_no_cases(any_store: CloudStore) -> None:
    store = any_store
    res = check_release(store, {"min_score": 0.5}, None)
    assert res.passed and res.score_current is None and "no regression cases yet" in res.reasons[0]


class _Always:
    def __init__(self, alert: bool) -> None:
        self.alert = alert

    def replay(self, case: object) -> bool:
        return self.alert


def test_any_replayer_plugs_in(any_store: CloudStore) -> None:
    store = any_store
    _history(store)
    capture_cases(store, NOW)
    res = check_release(store, _Always(True), _Always(False))
    # always alerting: misses right (3), false alarms wrong (2); never: the opposite
    assert res.score_candidate == pytest.approx(3 / 5) and res.score_current == pytest.approx(2 / 5)
    fp2 = next(c.id for c in list_cases(store) if c.alert_id == "fp2")  # critical: sensitive
    assert not res.passed and res.reasons == (f"sensitive case {fp2} (false_alarm) regresses: current "
                                              "gives no alert, candidate gives an alert [sensitive: severity "
                                              "critical is sensitive]",)
    assert not check_release(store, _Always(False), _Always(True)).passed  # misses regress


_case = st.tuples(st.floats(0, 1), st.floats(0, 2), st.booleans(), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(_case, min_size=1, max_size=12), ms=st.floats(0, 1), th=st.floats(0, 2),
       ms2=st.floats(0, 1), th2=st.floats(0, 2))
def test_check_release_properties(cases: list, ms: float, th: float, ms2: float, th2: float) -> None:
    """A config never blocks against itself; the verdict is exactly the documented rule."""
    store = CloudStore()
    for i, (score, dev, is_miss, severe) in enumerate(cases):
        aid = f"a{i}"
        add_alert(store, aid, NOW - D + i, score=score, metrics={"hr": (100 * (1 + dev), 100)},
                  severity="critical" if severe else "info")
        add_feedback(store, aid, "label" if is_miss else "dismiss", NOW - 10 + i, label="missed")
    capture_cases(store, NOW)
    cur = {"min_score": ms, "metric_thresholds": {"hr": th}}
    cand = {"min_score": ms2, "metric_thresholds": {"hr": th2}}
    assert check_release(store, cur, cur).passed
    res = check_release(store, cand, cur)
    gate_c, gate_k = AlertGate.from_config(cand), AlertGate.from_config(cur)
    ok_c = ok_k = 0
    sensitive_regression = False
    for c in list_cases(store):
        n = EventNumbers.from_json(c.window["numbers"])
        rc, rk = gate_c.alerts(n) == c.expects_alert, gate_k.alerts(n) == c.expects_alert
        ok_c, ok_k = ok_c + rc, ok_k + rk
        sensitive_regression |= c.sensitive and rk and not rc
    assert res.passed == (not sensitive_regression and ok_c >= ok_k)


def _bundle(tmp_path, detector: dict, version: int):  # type: ignore[no-untyped-def]
    priv, pub = signing.generate_keypair()
    data = bundles.build_bundle(b"model", detector, name="collar", version=version, private_key=priv,
                                device_class="collar-v1", created="2026-11-26T00:00:00+00:00")
    p = tmp_path / f"collar-{version}.bundle"
    p.write_bytes(data)
    return p, pub, data, bundles


def test_release_check_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "cloud.db"
    store = CloudStore(db)
    _history(store)
    capture_cases(store, NOW)
    register_release(store, ReleaseRef("collar", "1", "x"), status="fleet", now=NOW,
                     detector_config={"min_score": 0.25})
    store.close()
    good, pub, _, _ = _bundle(tmp_path, {"min_score": 0.25, "metric_thresholds": {"steps": 0.2}}, 2)
    out = io.StringIO()
    assert release_check_cli(db, good, public_key=pub, out=out) == 0
    text = out.getvalue()
    assert "collar v2 against v1" in text and "PASSED" in text and "signature not verified" not in text
    bad, _, data, bundles = _bundle(tmp_path, {"min_score": 0.35}, 3)
    out = io.StringIO()
    assert release_check_cli(db, bad, out=out) == 1
    assert "BLOCKED" in out.getvalue() and "signature not verified" in out.getvalue()
    out = io.StringIO()
    assert release_check_cli(db, bad, public_key=pub, out=out) == 2  # signed by another key
    assert "signature" in out.getvalue()
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"not a zip")
    out = io.StringIO()
    assert release_check_cli(db, junk, out=out) == 2 and "not a model bundle" in out.getvalue()
    assert release_check_cli(db, tmp_path / "missing.bundle", out=io.StringIO()) == 2
    assert passed_check_id(CloudStore(db), ReleaseRef("collar", "2", bundles.read_bundle(
        good.read_bytes(), pub, running_version=0, device_class="collar-v1").manifest.sha256))


def test_without_a_current_release_sensitive_cases_must_pass(any_store: CloudStore) -> None:
    store = any_store
    _history(store)
    capture_cases(store, NOW)
    res = check_release(store, {"min_score": 0.35}, None)  # silences miss1 (sensitive)
    miss1 = next(c.id for c in list_cases(store) if c.alert_id == "miss1")
    assert not res.passed
    assert any(r.startswith(f"sensitive case {miss1} (miss) fails and there is no current release")
               for r in res.reasons)
    assert {o.status for o in res.outcomes} <= {"pass", "fail"}


_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(device=_ids, individual=_ids, seq=st.integers(1, 2**63 - 1), label=st.text(max_size=40),
       score=st.floats(0, 1), obs=st.floats(allow_nan=False, allow_infinity=False),
       base=st.floats(allow_nan=False, allow_infinity=False), metric=st.text(min_size=1, max_size=20))
@example(device="d", individual="i", seq=1, label="", score=0.5, obs=1e12, base=1e-300, metric="hr")
def test_cases_round_trip_type_edges(device: str, individual: str, seq: int, label: str, score: float,
                                     obs: float, base: float, metric: str) -> None:
    store = CloudStore()
    event = record_of(seq, "event", NOW - D, individual, {"start_ts": NOW - D, "ts": NOW - D, "metrics": [metric],
                                                          "directions": [0], "score": score, "severity": "info",
                                                          "baseline": [base], "observed": [obs],
                                                          "model_version": label})
    store.store_batch(UplinkBatch(device, (event,)))
    add_alert(store, "a", NOW - D, device_id=device, individual_id=individual, seq=seq, score=score,
              metrics={metric: (obs, base)})
    add_feedback(store, "a", "label", NOW - 10, label="missed", device_id=device, individual_id=individual)
    add_alert(store, "b", NOW - D + 1)
    add_feedback(store, "b", "label", NOW - 5, label=label)  # free text: a case only if it says so
    (case, *others) = capture_cases(store, NOW)
    assert (case.device_id, case.individual_id, case.seq) == (device, individual, seq)
    assert case.window["event"]["body"] == to_json(event.body)
    assert case.window["alert"]["metrics"] == [metric]
    assert list_cases(store)[0] == case  # what was stored is what is read
    dev = EventNumbers.from_json(case.window["numbers"]).devs[metric]
    assert dev is not None and 0 <= dev <= 1e9
    assert len(others) == int(label.strip().lower() in {"missed", "miss", "missed_event", "missed_alert",
                                                        "false_alarm", "false_positive", "normal"})


def test_a_candidate_that_never_alerts_is_blocked_by_confirmed_cases(any_store: CloudStore) -> None:
    """Confirmed true positives are cases too: otherwise silence would pass every false-alarm case."""
    store = any_store
    for i in range(5):
        add_alert(store, f"ok{i}", NOW - (9 - i) * D, score=0.8, metrics={"resting_hr": (80, 60)}, seq=10 + i)
        add_feedback(store, f"ok{i}", "confirm", NOW - (8 - i) * D)
    for i in range(3):
        add_alert(store, f"fa{i}", NOW - (5 - i) * D, score=0.5, metrics={"resting_hr": (64, 60)}, seq=20 + i)
        add_feedback(store, f"fa{i}", "dismiss", NOW - (4 - i) * D)
    capture_cases(store, NOW, RegressionConfig(sensitive_kinds=("miss", "confirmed"), capture_confirmed=True))
    silent = check_release(store, {"min_score": 0.99, "default_metric_threshold": 1.0}, {"min_score": 0.0})
    assert not silent.passed
    assert sum(o.kind == "confirmed" and not o.candidate_alerted for o in silent.outcomes) == 5
