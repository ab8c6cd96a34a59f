"""Retraining and releases on the simulation's clock: the cloud's real rules, check and rollout.

``ReleasePipeline.daily(now)`` evaluates ``cloud.retrain`` rules once per simulated day. On a
request it tunes a detector candidate on the request's exported dataset
(``train_detector_candidate``): the BETTER candidate. It also builds deliberately WORSE ones:

- ``worse-silent``: raises the alert gate so far that confirmed cases would no longer alert;
- ``worse-noisy-gate``: the factory gate again (alerts on every confirmed false alarm the
  current release stopped), once the fleet runs a tuned release;
- ``worse-trigger-happy``: the current gate with a trigger-happy engine (``cusum_h`` 4). The
  release check replays traced cases through the engine, but cases are past alerts and misses:
  a trigger-happy engine alerts on them as the current one does and raises its new alerts on
  quiet data no case holds, so this one is for the canary stage to catch.

Every candidate goes through ``cloud.regression.check_release`` against the fleet's current
release; those that pass are queued, and one at a time started with ``RolloutManager.start``.
``tick(now)`` starts queued rollouts; the aggregator (``Aggregator(rollouts=mgr)``) ticks the
``RolloutManager``, signs and publishes its commands and routes the devices' replies back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.regression import ReleaseRef, check_release
from cloud.releases import (
    RolloutConfig,
    RolloutManager,
    current_release,
    register_release,
)
from cloud.releases.config import CohortConfig, LimitsConfig, StageConfig, StagesConfig
from cloud.retrain import (
    RetrainConfig,
    RetrainRequest,
    evaluate_retrain_rules,
    train_detector_candidate,
)
from cloud.store.db import CloudStore
from cloud.store.rollouts import RolloutRepository
from shared.bundles import build_bundle

logger = logging.getLogger(__name__)
MODEL = "collar"
FACTORY_DETECTOR: dict[str, Any] = {"min_score": 0.0}
DAY = 86400.0


def sim_rollout_config(n_devices: int) -> RolloutConfig:
    """Rollout settings for a small simulated fleet (the defaults assume thousands of devices)."""
    return RolloutConfig(
        cohorts=CohortConfig(shadow_percent=35.0, canary_percent=20.0, salt="edgeloop-sim"),
        stages=StagesConfig(shadow=StageConfig(24.0, min(5.0, n_devices * 0.1), 0),
                            canary=StageConfig(72.0, min(10.0, n_devices * 0.3), 2),
                            fleet=StageConfig(24.0, 0.0, 0)),
        limits=LimitsConfig(min_device_days_for_rates=min(5.0, n_devices * 0.25)))


@dataclass
class Candidate:
    kind: str  # better | worse-silent | worse-noisy-gate | worse-trigger-happy
    version: int
    config: dict[str, Any]
    created: float
    bundle_path: str
    sha256: str
    check_passed: bool | None = None
    check_reasons: list[str] = field(default_factory=list)
    check_summary: str = ""
    rollout_id: int | None = None
    note: str = ""


class ReleasePipeline:
    """Owns the model versions of one simulated fleet (name ``collar``)."""

    def __init__(self, store: CloudStore, key: Any, out: Path, devices: list[str],
                 retrain: RetrainConfig, rollout: RolloutConfig, start_ts: float,
                 max_stage_days: float = 10.0) -> None:
        self.store, self.key, self.out = store, key, out
        self.devices = sorted(devices)
        self.retrain = retrain
        self.mgr = RolloutManager(store, rollout)
        self.rollout_cfg = rollout
        (out / "bundles").mkdir(parents=True, exist_ok=True)
        self.next_version = 1
        self.candidates: list[Candidate] = []
        self.requests: list[RetrainRequest] = []
        self.queue: list[Candidate] = []
        self.factory = self._build("factory", FACTORY_DETECTOR, start_ts)
        register_release(store, ReleaseRef(MODEL, "1", self.factory.sha256), status="fleet", now=start_ts,
                         detector_config=FACTORY_DETECTOR, bundle_path=self.factory.bundle_path)
        self.tuning_attempts = 0
        self.max_stage_s = max_stage_days * DAY

    def _build(self, kind: str, config: dict[str, Any], now: float) -> Candidate:
        v = self.next_version
        self.next_version += 1
        data = build_bundle(f"edgeloop-sim-model-v{v}".encode(), config, name=MODEL, version=v,
                            private_key=self.key, device_class="collar", created="2026-01-01T00:00:00+00:00")
        path = self.out / "bundles" / f"{MODEL}-v{v}.bundle"
        path.write_bytes(data)
        import hashlib
        sha = hashlib.sha256(f"edgeloop-sim-model-v{v}".encode()).hexdigest()
        return Candidate(kind, v, dict(config), now, str(path), sha)

    def current(self) -> tuple[ReleaseRef, dict[str, Any]]:
        cur = current_release(self.store, MODEL)
        assert cur is not None
        return ReleaseRef(MODEL, str(cur["version"]), cur["sha256"]), dict(cur["detector_config"])

    def _check(self, c: Candidate, now: float) -> None:
        ref, cfg = self.current()
        chk = check_release(self.store, c.config, cfg, candidate_ref=ReleaseRef(MODEL, str(c.version), c.sha256),
                            current_ref=ref, now=now)
        c.check_passed, c.check_reasons = chk.passed, list(chk.reasons)
        n = len(chk.outcomes)
        reg = sum(1 for o in chk.outcomes if o.status == "regression")
        fixed = sum(1 for o in chk.outcomes if o.status == "fixed")
        c.check_summary = (f"{n} cases vs current v{ref.version}: {fixed} fixed, {reg} regressions; "
                           f"score {chk.score_candidate:.3f} vs {chk.score_current if chk.score_current is not None else '-'}")
        self.candidates.append(c)
        if chk.passed:
            self.queue.append(c)
        logger.info("sim.release_check", extra={"kind": c.kind, "version": c.version, "passed": chk.passed})

    # ---- daily ---------------------------------------------------------------------------------
    def daily(self, now: float) -> list[RetrainRequest]:
        reqs = evaluate_retrain_rules(self.store, self.retrain, now, export_dir=self.out / "retrain")
        self.requests += reqs
        kinds = {c.kind for c in self.candidates}
        ref, cur_cfg = self.current()
        if reqs and "better" not in {c.kind for c in self.candidates if c.check_passed} \
                and self.tuning_attempts < 5:
            self.tuning_attempts += 1
            req = reqs[0]
            cand_cfg = train_detector_candidate(req.dataset_path, cur_cfg)
            if cand_cfg == cur_cfg:
                logger.info("sim.tuning_no_change", extra={"request": req.id})
            else:
                c = self._build("better", cand_cfg, now)
                c.note = f"tuned on request {req.id} ({req.rule})"
                self._check(c, now)
        if reqs and "worse-silent" not in kinds:
            c = self._build("worse-silent", {**cur_cfg, "min_score": 0.99,
                                             "default_metric_threshold": 1.0}, now)
            c.note = "alert gate raised: min_score 0.99, every metric must deviate 100%"
            self._check(c, now)
        if ref.version != "1" and "worse-noisy-gate" not in kinds:
            c = self._build("worse-noisy-gate", dict(FACTORY_DETECTOR), now)
            c.note = "the factory gate again on top of the tuned fleet release"
            self._check(c, now)
        if "worse-trigger-happy" not in kinds and (ref.version != "1" or (
                self.requests and now - self.requests[0].created >= 6 * DAY)):
            c = self._build("worse-trigger-happy", {**cur_cfg, "cusum_h": 4.0, "cusum_k": 0.5}, now)
            c.note = "current gate, engine CUSUM threshold 12 -> 4 z-hours (replayed through the engine on traced cases)"
            self._check(c, now)
        return reqs

    def _busy(self) -> bool:
        return any(c.rollout_id is not None and self._state(c.rollout_id) in ("shadow", "canary", "fleet", "halted")
                   for c in self.candidates)

    def _rollouts(self) -> RolloutRepository:
        return RolloutRepository(self.store.backend)

    def _state(self, rid: int) -> str:
        row = self._rollouts().rollout(rid)
        return str(row["state"]) if row else "?"

    # ---- rollout -------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Start the next queued rollout when none is active; halt one stalled in a stage. The
        aggregator ticks the ``RolloutManager`` itself (``Aggregator(rollouts=...)``)."""
        for c in self.candidates:  # an operator halts a rollout stuck in one stage for too long
            if c.rollout_id is not None and self._state(c.rollout_id) in ("shadow", "canary", "fleet"):
                ro = self._rollouts().rollout(c.rollout_id)
                assert ro is not None
                since, stage = ro["stage_started"], ro["state"]
                if now - since > self.max_stage_s:
                    self.mgr.halt(c.rollout_id, f"stalled in {stage} for {(now - since) / DAY:.1f} days "
                                  f"(limit {self.max_stage_s / DAY:g}): not enough evidence to advance", now)
        if self.queue and not self._busy():
            c = self.queue.pop(0)
            try:
                c.rollout_id = self.mgr.start(ReleaseRef(MODEL, str(c.version), c.sha256), self.devices, now,
                                              detector_config=c.config, bundle_path=c.bundle_path)
            except Exception as exc:  # conflict or not checked: recorded, never fatal for the sim
                c.note += f"; rollout refused: {exc}"
                logger.warning("sim.rollout_refused", extra={"version": c.version, "reason": str(exc)})

    def rollout_rows(self) -> list[dict[str, Any]]:
        """Per candidate: how far it went (cohort x state counts, transitions)."""
        out = []
        for c in self.candidates:
            row: dict[str, Any] = {"kind": c.kind, "version": c.version, "check": c.check_passed,
                                   "check_summary": c.check_summary, "reasons": c.check_reasons,
                                   "note": c.note, "rollout_id": c.rollout_id, "config": c.config}
            if c.rollout_id is not None:
                be = self.store.backend
                row["state"] = self._state(c.rollout_id)
                row["transitions"] = be.query(
                    "SELECT ts, from_state, to_state, reason FROM rollout_events WHERE rollout_id = ? "
                    "AND kind = 'transition' ORDER BY id", [c.rollout_id])
                row["devices"] = be.query(
                    "SELECT device_id, cohort, state, installed_at, promoted_at FROM rollout_devices "
                    "WHERE rollout_id = ?", [c.rollout_id])
                ever = {r[0] for r in be.execute(
                    "SELECT DISTINCT device_id FROM rollout_events WHERE rollout_id = ? AND kind = 'reply' "
                    "AND to_state = 'promoted'", [c.rollout_id]).fetchall()}
                cohorts = {d["device_id"]: d["cohort"] for d in row["devices"]}
                row["ever_promoted"] = {k: sum(1 for d in ever if cohorts.get(d) == k)
                                        for k in ("canary", "shadow", "fleet")}
                installed = {r[0] for r in be.execute(
                    "SELECT DISTINCT device_id FROM rollout_events WHERE rollout_id = ? AND kind = 'reply' "
                    "AND to_state = 'installed_shadow'", [c.rollout_id]).fetchall()}
                row["ever_installed"] = {k: sum(1 for d in installed if cohorts.get(d) == k)
                                         for k in ("canary", "shadow", "fleet")}
                row["metrics"] = json.loads(self._rollouts().last_metrics(c.rollout_id) or "{}")
            out.append(row)
        return out
