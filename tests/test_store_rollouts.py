"""RolloutRepository (cloud/store/rollouts.py) on both back ends: releases, rollouts, their devices,
events and shadow stats, and the reads of other tables the rollout makes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloud.store.db import CloudStore
from cloud.store.rollouts import RolloutRepository

T0 = 1_800_000_000.0


def _rollout(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model_name": "collar", "version": "2", "sha256": "b" * 64, "bundle_path": "/b", "detector_config": "{}",
        "current_version": "1", "state": "shadow", "stage_started": T0, "canary_started": None, "created": T0,
        "updated": T0, "release_check_id": 7, "reason": "started", "last_metrics": "{}", "control_snapshot": None}
    return {**row, **kw}


def _device(rid: int, device_id: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "rollout_id": rid, "device_id": device_id, "cohort": "canary", "state": "pending", "outstanding": None,
        "sent_at": None, "installed_at": None, "promoted_at": None, "updated": T0, "detail": "", "attempts": 0,
        "failed_step": None}
    return {**row, **kw}


def _release(version: str, status: str, updated: float) -> dict[str, Any]:
    return {"name": "collar", "version": version, "sha256": version * 64, "detector_config": json.dumps({"v": version}),
            "bundle_path": "", "status": status, "updated": updated, "rollout_id": None}


def test_releases_upsert_and_supersede(any_store: CloudStore) -> None:
    repo = RolloutRepository(any_store.backend)
    assert repo.fleet_release("collar") is None
    repo.save_release(_release("1", "fleet", T0))
    repo.save_release(_release("2", "candidate", T0 + 1))
    assert repo.fleet_release("collar")["version"] == "1"  # type: ignore[index]
    repo.save_release({**_release("2", "fleet", T0 + 2), "rollout_id": 3})  # same key: replaced
    got = repo.fleet_release("collar")
    assert got is not None and (got["version"], got["rollout_id"], got["updated"]) == ("2", 3, T0 + 2)
    repo.supersede_fleet("collar", "2", T0 + 3)
    rows = any_store.backend.query("SELECT version, status FROM releases ORDER BY version")
    assert [(r["version"], r["status"]) for r in rows] == [("1", "superseded"), ("2", "fleet")]


def test_rollouts_devices_and_events(any_store: CloudStore) -> None:
    repo = RolloutRepository(any_store.backend)
    with any_store.backend.transaction():
        rid = repo.create_rollout(_rollout())
        repo.add_devices([_device(rid, "d2"), _device(rid, "d1", cohort="fleet")])
    assert rid == 1 and repo.create_rollout(_rollout(model_name="tag", state="completed")) == 2
    assert repo.rollout(99) is None
    assert repo.rollout(rid)["state"] == "shadow"  # type: ignore[index]
    assert repo.rollout_ids() == [1, 2] and repo.rollout_ids(("shadow", "canary")) == [1]
    assert repo.active_rollout_of("collar", ("shadow",)) == (1, "2")
    assert repo.active_rollout_of("tag", ("shadow",)) is None
    repo.update_rollout(rid, {"state": "canary", "canary_started": T0 + 5, "last_metrics": '{"sent": 2}'})
    assert repo.last_metrics(rid) == '{"sent": 2}' and repo.rollout(rid)["canary_started"] == T0 + 5  # type: ignore[index]
    with pytest.raises(ValueError, match="no column"):
        repo.update_rollout(rid, {"nope": 1})
    assert [d["device_id"] for d in repo.devices(rid)] == ["d1", "d2"]
    repo.update_device(rid, "d2", {"outstanding": "promote", "attempts": 1, "sent_at": T0 + 6})
    assert repo.device_rollout("d2", ("canary",), outstanding="promote") == rid
    assert repo.device_rollout("d2", ("canary",), outstanding="rollback") is None
    assert repo.device_rollout("d1", ("canary",)) == rid and repo.device_rollout("d1", ("fleet",)) is None
    for i in range(5):
        repo.add_event({"rollout_id": rid, "ts": T0 + i, "kind": "transition" if i % 2 else "command",
                        "device_id": None, "from_state": None, "to_state": None, "reason": f"e{i}", "data": "{}"})
    assert [e["reason"] for e in repo.events(rid, 3)] == ["e2", "e3", "e4"]
    assert repo.events(rid, 0) == []
    assert [e["reason"] for e in repo.transitions(rid)] == ["e1", "e3"]


def test_shadow_stats(any_store: CloudStore) -> None:
    repo = RolloutRepository(any_store.backend)
    assert repo.shadow_totals(1) == (0, 0)
    repo.save_shadow_stats(1, "d1", 10, 8, T0)
    repo.save_shadow_stats(1, "d2", 5, 5, T0)
    repo.save_shadow_stats(1, "d1", 20, 15, T0 + 1)  # cumulative counters: replaced
    repo.save_shadow_stats(2, "d1", 100, 0, T0)
    assert repo.shadow_totals(1) == (25, 20)


def test_reads_of_other_tables(any_store: CloudStore) -> None:
    b = any_store.backend
    repo = RolloutRepository(b)
    any_store.set_device_state("dev-b", "online", T0)
    any_store.set_device_state("dev-a", "online", T0)
    assert repo.device_ids() == ["dev-a", "dev-b"]
    b.execute("INSERT INTO alerts (alert_id, device_id, ts, action, notified_at) VALUES (?, ?, ?, ?, ?)",
              ["a1", "dev-a", T0 + 10, "notify", T0 + 10])
    b.execute("INSERT INTO alerts (alert_id, device_id, ts, action, notified_at) VALUES (?, ?, ?, ?, ?)",
              ["a0", "dev-b", T0 - 10, "notify", None])
    assert [a["alert_id"] for a in repo.alerts_between(T0, T0 + 10)] == ["a1"]
    b.execute("INSERT INTO feedback (alert_id, action, label, ts) VALUES (?, ?, ?, ?)", ["a1", "confirm", "", T0 + 20])
    b.execute("INSERT INTO feedback (alert_id, action, label, ts) VALUES (?, ?, ?, ?)", ["a1", "dismiss", "", T0 + 30])
    assert [f["action"] for f in repo.feedback_between(T0, T0 + 25)] == ["confirm"]
    assert [f["action"] for f in repo.feedback_between(T0, T0 + 30)] == ["confirm", "dismiss"]
    assert repo.check_current_version(1) is None
