"""The demo report's perception section (issue 16): each injected perception condition, caught
after how long and what the cloud decided, or missed; events outside them are listed."""

from __future__ import annotations

from typing import Any

from edgeloop.demo_report import _perception
from firmware_sim.perception import default_unit
from firmware_sim.scenario import DEMO_START


def _ev(seq: int, ts: float, kind: str, metric: str) -> dict[str, Any]:
    return {"seq": seq, "ts": ts, "device_id": "pi-000", "incarnation": "i1", "individual_id": "gate-cam",
            "body": {"kind": kind, "metrics": [metric], "score": 0.9, "start_ts": ts - 60}}


def test_each_perception_condition_is_caught_after_how_long_or_missed() -> None:
    unit = default_unit(14.0)
    cond = {c.kind: c for c in unit.conditions}
    drift, novel, frozen = cond["conf_drift"], cond["novel_class"], cond["frozen"]
    events = [_ev(1, DEMO_START + drift.start + 3 * 3600, "sustained", "confidence"),
              _ev(2, DEMO_START + novel.start + 120, "novel", "novel_class:deer"),
              _ev(3, DEMO_START + frozen.start + 1800, "health", "frozen"),
              _ev(4, DEMO_START + 3600, "novel", "class_rate:person")]  # before any condition
    decisions = {"pi-000:i1:2": {"action": "notify", "rule": "sustained-deviation"}}
    caught, lines = _perception([unit], events, decisions, DEMO_START)
    text = "\n".join(lines)
    assert caught == 3, text
    assert "conf_drift" in text and "CAUGHT    180 min after onset (confidence, sustained" in text
    assert "CAUGHT      2 min after onset (novel_class:deer, novel; cloud: notify - sustained-deviation)" in text
    assert "CAUGHT     30 min after onset (frozen, health" in text
    assert any(ln.strip().startswith("moved") and ln.endswith("MISSED") for ln in lines), text
    assert "OTHER EVENT" in text and "class_rate:person" in text
