"""The feedback-loop simulation (scripts/sim_feedback_loop) on a small fleet against a private
mosquitto: the invariants that must hold whatever the tuning. Every record the agents wrote is
stored exactly once and every event decided once; no retraining request fires unless its rule's
condition, recomputed from the store, holds; a deliberately worse candidate is blocked by the
release check or never promoted outside the canary cohort; rollout states are consistent."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_sim.loop import SimConfig, run_simulation
from fleet_sim.report import format_report, invariants, phase_metrics


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_simulation_invariants(tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    cfg = SimConfig(individuals=10, days=12.0, seed=3, step_hours=12.0, workers=2, out=tmp_path / "sim",
                    broker_url=mosquitto.url)
    res = run_simulation(cfg)
    inv = invariants(res)
    phases = phase_metrics(res)
    text = format_report(res, phases, inv)
    failed = {k: v for k, v in inv.items() if not v[0]}
    assert not failed, text
    assert res.windows >= 10 * 12 * 1440 - 10, "every simulated minute went through an agent"
    assert res.counts.get("rejected", 0) == 0, text
    decided = sum(v for k, v in res.counts.items() if k.startswith("decision."))
    assert decided > 0 and res.counts.get("feedback", 0) > 0, text  # the loop ran: events and owners
    worse = [r for r in res.pipeline.rollout_rows() if r["kind"].startswith("worse")]
    for r in worse:
        assert r["check"] is False or not (r.get("ever_promoted") or {}).get("fleet"), r
    assert "phase 1" in text and "phase 2" in text
