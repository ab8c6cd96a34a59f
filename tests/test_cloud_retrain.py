"""Retraining rules (scheduled, with cooldown), dataset export, drift and detector candidates."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from recs import record_of

from cloud.regression import ReleaseRef, check_release
from cloud.regression.fixtures import add_alert, add_feedback
from cloud.regression.replay import EventNumbers
from cloud.releases import register_release
from cloud.retrain import (
    DatasetError,
    DriftRule,
    NewCasesRule,
    PrecisionRule,
    evaluate_retrain_rules,
    evaluations,
    export_dataset,
    list_requests,
    load_retrain_config,
    parse_config,
    psi,
    read_dataset,
    train_detector_candidate,
    tune_detector,
)
from cloud.retrain.detector import Sample
from cloud.store.db import CloudStore
from shared.config import ConfigError
from shared.schemas import UplinkBatch

D = 86400.0
NOW = 1_800_000_000.0
FB = ("confirm", "dismiss", "normal_for_her", "ignored", "missed", None)


def _labelled_history(store: CloudStore, n_tp: int, n_fp: int, t0: float, version: str = "1",
                      tag: str = "a") -> None:
    for i in range(n_tp + n_fp):
        aid = f"{tag}{i}"
        add_alert(store, aid, t0 + i * 60, model_version=version, score=0.6,
                  metrics={"resting_hr": (70 + (10 if i < n_tp else 1), 60)})
        add_feedback(store, aid, "confirm" if i < n_tp else "dismiss", t0 + i * 60 + 30)


# ---------------------------------------------------------------------- config

def test_default_config_loads_with_all_three_kinds() -> None:
    cfg = load_retrain_config()
    assert [r.kind for r in cfg.rules] == ["precision", "new_cases", "drift"]
    assert all(r.model_name == "collar" for r in cfg.rules)


@pytest.mark.parametrize(("data", "match"), [
    ({"rules": [{"name": "p", "kind": "precision", "count": 3}]}, r"rules\[0\] -> count: unknown key"),
    ({"rules": [{"name": "p", "kind": "precison"}]}, r"rules\[0\] -> kind: 'precison' is not one of"),
    ({"rules": [{"name": "p", "kind": "precision", "min_precision": 2.0}]}, r"min_precision must be in \[0, 1\]"),
    ({"rules": [{"kind": "precision"}]}, "every rule needs a non-empty name"),
    ({"rules": [{"name": "x", "kind": "drift"}, {"name": "x", "kind": "new_cases"}]}, r"duplicates \['x'\]"),
    ({"rules": [{"name": "x", "kind": "new_cases", "case_kinds": ["tp"]}]}, "case_kinds"),
    ({"rules": [{"name": "x", "kind": "drift", "method": "kl"}]}, r"method: 'kl' is not one of"),
    ({"regression": {"sensitive_kinds": ["oops"]}}, "sensitive_kinds"),
    ({"exports": {}}, "exports: unknown key"),
])
def test_config_errors_name_the_key(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


# ---------------------------------------------------------------------- precision rule

def test_precision_rule_fires_records_reason_and_exports_dataset(any_store: CloudStore, tmp_path: Path) -> None:
    store = any_store
    store.store_batch(UplinkBatch("dev-1", (record_of(5, "event", NOW - 3 * D, "ind-1", {
        "start_ts": NOW - 3 * D, "ts": NOW - 3 * D, "metrics": ["resting_hr"], "directions": [1], "score": 0.6,
        "severity": "warning", "baseline": [60.0], "observed": [80.0]}),)))
    _labelled_history(store, 8, 12, NOW - 3 * D)
    store.backend.execute("UPDATE alerts SET seq = ? WHERE alert_id = ?", [5, "a0"])
    rule = PrecisionRule(name="prec", model_name="collar", min_precision=0.5, min_labelled=20)
    reqs = evaluate_retrain_rules(store, [rule], NOW, export_dir=tmp_path)
    assert len(reqs) == 1
    r = reqs[0]
    assert (r.model_name, r.model_version, r.rule) == ("collar", "1", "prec")
    assert "precision 0.400 < 0.5 over 20 labelled alerts (need >= 20)" in r.reason
    assert r.measured["tp"] == 8 and r.measured["fp"] == 12
    assert list_requests(store)[0].reason == r.reason
    manifest, alerts, cases = read_dataset(r.dataset_path)
    assert manifest["request"]["rule"] == "prec" and manifest["counts"]["alerts"] == 20
    assert len(cases) == 12 and {c["kind"] for c in cases} == {"false_alarm"}
    a0 = next(a for a in alerts if a["alert_id"] == "a0")
    assert (a0["device_id"], a0["individual_id"], a0["seq"], a0["model_version"]) == ("dev-1", "ind-1", 5, "1")
    assert a0["feedback"]["action"] == "confirm" and a0["outcome"] == "tp" and a0["alert"] is True
    assert a0["event"]["score"] == 0.6 and a0["numbers"]["devs"]["resting_hr"] == pytest.approx(1 / 3)
    assert evaluations(store, "prec")[0]["outcome"] == "fired"


def test_precision_rule_needs_enough_labels(any_store: CloudStore) -> None:
    store = any_store
    _labelled_history(store, 1, 18, NOW - D)
    with tempfile.TemporaryDirectory() as d:
        assert evaluate_retrain_rules(store, [PrecisionRule(name="p", model_name="m")], NOW, export_dir=d) == []
    ev = evaluations(store)[0]
    assert ev["outcome"] == "not_met" and "not < 0.6 over 19 labelled alerts (need >= 20)" in ev["reason"]


_alert = st.tuples(st.floats(0, 30), st.sampled_from([True, True, False]),
                   st.sampled_from(FB + ("confirm", "dismiss")), st.floats(0, 3),
                   st.sampled_from(["1", "1", "2"]))
_BOUNDARY = [(1.0, True, "confirm", 0.0, "1"), (1.0, True, "dismiss", 0.0, "1")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hist=st.lists(_alert, max_size=40), window=st.sampled_from([7.0, 14.0]),
       min_precision=st.sampled_from([0.05, 0.25, 0.5, 2 / 3, 0.75, 0.95]),
       min_labelled=st.integers(1, 12))
@example(hist=_BOUNDARY, window=7.0, min_precision=0.5, min_labelled=2)  # precision == threshold
def test_precision_request_exists_iff_condition_holds(hist: list, window: float, min_precision: float,
                                                      min_labelled: int) -> None:
    store = CloudStore()
    tp = fp = 0
    for i, (age, notified, fb, delay, version) in enumerate(hist):
        ts = NOW - age * D
        aid = f"a{i}"
        add_alert(store, aid, ts, action="notify" if notified else "suppress", model_version=version)
        if fb is not None:
            action, label = ("label", "missed") if fb == "missed" else (fb, "")
            add_feedback(store, aid, action, ts + delay * D, label=label)
        counted = (fb is not None and ts + delay * D <= NOW and version == "1" and notified
                   and ts >= NOW - window * D)
        tp += counted and fb == "confirm"
        fp += counted and fb in ("dismiss", "normal_for_her")
    holds = tp + fp >= min_labelled and tp / (tp + fp) < min_precision
    rule = PrecisionRule(name="p", model_name="m", window_days=window, min_precision=min_precision,
                         min_labelled=min_labelled)
    with tempfile.TemporaryDirectory() as d:
        reqs = evaluate_retrain_rules(store, [rule], NOW, model_version="1", export_dir=d)
    assert bool(reqs) == holds
    assert len(list_requests(store)) == int(holds)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hist=st.lists(_alert, max_size=30), count=st.integers(1, 5),
       kinds=st.sampled_from([("miss",), ("false_alarm",), ("miss", "false_alarm")]))
@example(hist=[(1.0, True, "dismiss", 0.0, "1"), (1.0, False, "confirm", 0.0, "1")], count=2,
         kinds=("miss", "false_alarm"))  # exactly `count` cases
def test_new_cases_request_exists_iff_condition_holds(hist: list, count: int, kinds: tuple) -> None:
    store = CloudStore()
    n = 0
    for i, (age, notified, fb, delay, version) in enumerate(hist):
        ts = NOW - age * D
        add_alert(store, f"a{i}", ts, action="notify" if notified else "suppress", model_version=version)
        if fb is not None:
            action, label = ("label", "missed") if fb == "missed" else (fb, "")
            add_feedback(store, f"a{i}", action, ts + delay * D, label=label)
        if fb is None or ts + delay * D > NOW or version != "1":
            continue
        kind = ("miss" if fb == "missed" or (fb == "confirm" and not notified) else
                "false_alarm" if fb in ("dismiss", "normal_for_her") and notified else None)
        n += kind in kinds
    rule = NewCasesRule(name="c", model_name="m", count=count, case_kinds=kinds)
    with tempfile.TemporaryDirectory() as d:
        reqs = evaluate_retrain_rules(store, [rule], NOW, model_version="1", export_dir=d)
    assert bool(reqs) == (n >= count)


_step = st.tuples(st.integers(0, 3), st.integers(0, 4), st.sampled_from([0.5, 1.0, 1.5, 2.5]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_step, min_size=1, max_size=10), cooldown=st.sampled_from([0.0, 1.0, 2.0]),
       min_new=st.integers(1, 5))
def test_cooldown_fires_again_only_with_new_evidence(steps: list, cooldown: float, min_new: int) -> None:
    """Each step adds tp/fp labels, advances time and evaluates; requests fire exactly when the
    condition holds and (first time, or cooldown passed and >= min_new new labels)."""
    store = CloudStore()
    rule = PrecisionRule(name="p", model_name="m", window_days=30, min_precision=0.5, min_labelled=3,
                         min_new_evidence=min_new, cooldown_days=cooldown)
    t = NOW
    labels: list[tuple[float, bool]] = []  # (feedback ts, confirmed)
    last: float | None = None
    k = 0
    with tempfile.TemporaryDirectory() as d:
        for n_tp, n_fp, dt in steps:
            for j in range(n_tp + n_fp):
                aid = f"a{k}"
                k += 1
                add_alert(store, aid, t + j)
                add_feedback(store, aid, "confirm" if j < n_tp else "dismiss", t + j + 1)
                labels.append((t + j + 1, j < n_tp))
            t += dt * D
            tp = sum(1 for _, ok in labels if ok)
            holds = len(labels) >= 3 and tp / len(labels) < 0.5
            new = None if last is None else sum(1 for ts, _ in labels if ts > last)
            expect = holds and (last is None or (t - last >= cooldown * D and new >= min_new))
            fired = evaluate_retrain_rules(store, [rule], t, model_version="1", export_dir=d)
            assert bool(fired) == expect
            outcome = evaluations(store)[-1]
            if holds and not expect:
                assert outcome["outcome"] in ("cooldown", "no_new_evidence")
                assert "suppressed" in outcome["reason"]
            if expect:
                last = t


def test_a_new_model_version_starts_fresh_and_release_decides_the_version(any_store: CloudStore,
                                                                          tmp_path: Path) -> None:
    store = any_store
    _labelled_history(store, 2, 10, NOW - D, version="1")
    rule = PrecisionRule(name="p", model_name="collar", min_labelled=10, cooldown_days=30)
    assert evaluate_retrain_rules(store, [rule], NOW, export_dir=tmp_path)[0].model_version == "1"
    assert evaluate_retrain_rules(store, [rule], NOW + 60, export_dir=tmp_path) == []
    register_release(store, ReleaseRef("collar", "2"), status="fleet", now=NOW)
    assert evaluate_retrain_rules(store, [rule], NOW + 120, export_dir=tmp_path) == []
    assert evaluations(store)[-1]["model_version"] == "2"  # v2 has no labels yet
    _labelled_history(store, 2, 10, NOW + 200, version="2", tag="b")
    reqs = evaluate_retrain_rules(store, [rule], NOW + D, export_dir=tmp_path)
    assert [r.model_version for r in reqs] == ["2"]  # no cooldown carried over from v1


def test_no_model_is_logged(any_store: CloudStore) -> None:
    store = any_store
    assert evaluate_retrain_rules(store, load_retrain_config(), NOW) == []
    assert {e["outcome"] for e in evaluations(store)} == {"no_model"}


# ---------------------------------------------------------------------- drift

def _summaries(store: CloudStore, rng: np.random.Generator, t0: float, days: int, devices: int,
               mean: float, seq0: int) -> None:
    for dev in range(devices):
        recs = tuple(record_of(seq0 + k, "summary", t0 + k * D + dev, f"ind-{dev}",
                               {"day": f"d{k}", "minutes": 1440, "steps": 5000,
                                "metrics_mean": {"resting_hr": float(rng.normal(mean, 3.0))}})
                     for k in range(days))
        store.store_batch(UplinkBatch(f"dev-{dev}", recs))


def _agent_summaries(store: CloudStore, body: Callable[[int], dict[str, Any]], devices: int = 10,
                     days: int = 35) -> CloudStore:
    """``store`` with ``days`` daily summaries per device in the agent's layout, ending now."""
    add_alert(store, "x", NOW - 40 * D)
    for dev in range(devices):
        store.store_batch(UplinkBatch(f"dev-{dev}", tuple(
            record_of(k + 1, "summary", NOW - days * D + k * D + dev, f"ind-{dev}",
                      {"day": f"d{k}", "minutes": 1440, **body(k)}) for k in range(days))))
    return store


@pytest.mark.parametrize(("shift", "fires"), [(0.0, False), (6.0, True)])
def test_drift_rule(shift: float, fires: bool, any_store: CloudStore, tmp_path: Path) -> None:
    store = any_store
    add_alert(store, "x", NOW - 40 * D)
    rng = np.random.default_rng(7)
    _summaries(store, rng, NOW - 35 * D, 28, 10, 60.0, 1)
    _summaries(store, rng, NOW - 7 * D + 10, 7, 10, 60.0 + shift, 1000)
    rule = DriftRule(name="drift", model_name="collar", metrics=("resting_hr", "steps"))
    reqs = evaluate_retrain_rules(store, [rule], NOW, export_dir=tmp_path)
    assert bool(reqs) == fires
    m = evaluations(store)[-1]["measured"]["metrics"]
    assert m["resting_hr"]["reference_n"] == 280 and m["resting_hr"]["recent_n"] == 70
    assert m["steps"]["drift"] is False  # a constant metric does not drift
    if fires:
        assert "resting_hr (psi" in reqs[0].reason


def test_drift_needs_samples_and_a_real_reference(tmp_path: Path) -> None:
    store = CloudStore()
    add_alert(store, "x", NOW - 40 * D)
    rng = np.random.default_rng(0)
    _summaries(store, rng, NOW - 20 * D, 20, 1, 60.0, 1)  # 13 reference days, 1 device: 13 samples
    rule = DriftRule(name="d", model_name="m")
    assert evaluate_retrain_rules(store, [rule], NOW, export_dir=tmp_path) == []
    assert "no metric has >= 30 summaries" in evaluations(store)[-1]["reason"]
    # a fleet's first two days: 200 reference summaries, but from 2 days: no reference yet
    store = CloudStore()
    add_alert(store, "x", NOW - 40 * D)
    _summaries(store, rng, NOW - 9 * D, 2, 100, 60.0, 1)
    _summaries(store, rng, NOW - 7 * D + 10, 7, 100, 70.0, 100)
    assert evaluate_retrain_rules(store, [rule], NOW, export_dir=tmp_path) == []
    assert evaluations(store)[-1]["reason"].startswith("reference too short: summaries of 2 days")
    assert evaluate_retrain_rules(store, [replace(rule, min_reference_days=2)], NOW + 1, export_dir=tmp_path)


def test_drift_skips_partial_days(any_store: CloudStore, tmp_path: Path) -> None:
    """A device's first (or interrupted) day has fewer minutes and a lower activity mean: skipped."""
    rng = np.random.default_rng(5)
    store = _agent_summaries(any_store, lambda k: {"minutes": 300 if k >= 28 else 1440, "metrics_mean": {
        "activity": float(rng.normal(3 if k >= 28 else 6, 0.3))}})
    rule = DriftRule(name="d", model_name="m", metrics=("activity",))
    assert evaluate_retrain_rules(store, [rule], NOW, export_dir=tmp_path) == []
    assert evaluations(store)[-1]["measured"]["metrics"]["activity"]["recent_n"] == 0
    assert evaluate_retrain_rules(store, [replace(rule, min_day_minutes=0)], NOW + 1, export_dir=tmp_path)


def test_psi_values() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    assert psi(a, b) < 0.02
    assert psi(a, rng.normal(1, 1, 5000)) > 0.25
    assert psi([1.0] * 50, [1.0] * 50) == 0.0
    assert psi([1.0] * 50, [2.0] * 50) > 0.25
    with pytest.raises(ValueError, match="non-empty"):
        psi([], [1.0])


# ---------------------------------------------------------------------- detector candidates

def _dataset(tmp_path: Path, store: CloudStore) -> Path:
    return export_dataset(store, tmp_path / "ds", NOW)


def test_train_detector_candidate_separates_labels_and_keeps_other_keys(any_store: CloudStore, tmp_path: Path) -> None:
    store = any_store
    for i in range(10):  # true positives: hr +15..+24%; false alarms: hr +2..+8%
        add_alert(store, f"t{i}", NOW - D + i, score=0.6, metrics={"resting_hr": (115 + i, 100)})
        add_feedback(store, f"t{i}", "confirm", NOW - 100 + i)
    for i in range(7):
        add_alert(store, f"f{i}", NOW - D + 100 + i, score=0.6, metrics={"resting_hr": (102 + i, 100)})
        add_feedback(store, f"f{i}", "dismiss", NOW - 50 + i)
    base = {"cusum_h": 12.0, "min_score": 0.0}
    ds = _dataset(tmp_path, store)
    cand = train_detector_candidate(ds, base)
    assert cand["cusum_h"] == 12.0
    assert 0.08 < cand["metric_thresholds"]["resting_hr"] <= 0.15
    assert base == {"cusum_h": 12.0, "min_score": 0.0}  # not mutated
    res = check_release(store, cand, base)
    assert res.passed and res.score_candidate == 1.0


def test_tuning_never_breaks_a_sensitive_case_the_base_got_right() -> None:
    samples = [Sample(EventNumbers(0.6, {"hr": 0.2 + i / 100}), True) for i in range(5)]
    samples += [Sample(EventNumbers(0.6, {"hr": 0.01 + i / 200}), False) for i in range(5)]
    samples += [Sample(EventNumbers(0.6, {"hr": 0.05 + i / 100}), False) for i in range(3)]
    samples.append(Sample(EventNumbers(0.6, {"hr": 0.04}), True, 5.0, sensitive=True))
    t = tune_detector(samples, {})
    assert t.f1_candidate > t.f1_base
    assert t.config["metric_thresholds"]["hr"] <= 0.04  # the sensitive miss still alerts
    unchanged = tune_detector(samples[:5], {"min_score": 0.1})
    assert unchanged.config == {"min_score": 0.1} and unchanged.changed == {}


def test_one_or_two_labels_never_move_a_threshold() -> None:
    """A single wrongly dismissed fever (owner noise) must not set skin_temp's threshold at its level."""
    samples = [Sample(EventNumbers(0.6, {"skin_temp": 0.02 + i / 1000}), True) for i in range(6)]
    samples.append(Sample(EventNumbers(0.6, {"skin_temp": 0.018}), False))
    assert tune_detector(samples, {}).changed == {}
    samples += [Sample(EventNumbers(0.6, {"skin_temp": 0.005 + i / 1000}), False) for i in range(3)]
    t = tune_detector(samples, {})
    th = t.config["metric_thresholds"]["skin_temp"]
    assert 0.007 < th <= 0.02, "backed by 4 false alarms now, and every confirmed fever still alerts"


def test_datasets_are_verified(any_store: CloudStore, tmp_path: Path) -> None:
    store = any_store
    _labelled_history(store, 2, 2, NOW - D)
    ds = _dataset(tmp_path, store)
    with (ds / "alerts.jsonl").open("a") as f:
        f.write(json.dumps({"alert_id": "forged"}) + "\n")
    with pytest.raises(DatasetError, match="sha256 does not match"):
        read_dataset(ds)
    (ds / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest.json"):
        train_detector_candidate(ds, {})


def test_alerts_tagged_with_the_release_sha_prefix_count_for_its_version(any_store: CloudStore,
                                                                         tmp_path: Path) -> None:
    store = any_store
    sha = "0123456789abcdef" * 4
    register_release(store, ReleaseRef("collar", "3", sha), status="fleet", now=NOW - 5 * D)
    _labelled_history(store, 2, 10, NOW - D, version=sha[:12])  # what the device agent reports
    reqs = evaluate_retrain_rules(store, [PrecisionRule(name="p", model_name="collar", min_labelled=12)],
                                  NOW, export_dir=tmp_path)
    assert [r.model_version for r in reqs] == ["3"] and reqs[0].measured["labelled"] == 12


def test_drift_reads_the_agents_summary_layout(any_store: CloudStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = _agent_summaries(any_store, lambda k: {"day": "d", "metrics_mean": {
        "resting_hr": float(rng.normal(60 if k < 28 else 70, 3))}, "steps": 4000, "warming_up": False, "shadow": {}})
    reqs = evaluate_retrain_rules(store, load_retrain_config(), NOW, export_dir=tmp_path)
    assert [r.rule for r in reqs] == ["summary-drift"] and "resting_hr (psi" in reqs[0].reason


def test_a_model_hash_shared_by_two_releases_is_not_an_alias(any_store: CloudStore, tmp_path: Path) -> None:
    store = any_store
    sha = "fedcba9876543210" * 4
    register_release(store, ReleaseRef("collar", "3", sha), status="superseded", now=NOW - 9 * D)
    register_release(store, ReleaseRef("collar", "4", sha), status="fleet", now=NOW - 5 * D)  # detector-only change
    _labelled_history(store, 2, 10, NOW - D, version=sha[:12])
    rule = PrecisionRule(name="p", model_name="collar", min_labelled=12)
    assert evaluate_retrain_rules(store, [rule], NOW, export_dir=tmp_path) == []
    assert evaluations(store)[-1]["measured"]["labelled"] == 0
