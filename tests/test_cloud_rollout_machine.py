"""Hypothesis state machine over a rollout: random ticks, replies (ok, failed, lost) and quality.

Invariants: transitions follow the state diagram; commands reach the fleet cohort only in the
fleet stage; a device never has two commands in flight except a rollback superseding one; a
finished rollout sends nothing; rolled back means no device keeps the candidate (unless its
rollback failed); completed means every device runs it (or failed).
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloud.regression import ReleaseRef, check_release
from cloud.regression.fixtures import add_alert, add_feedback
from cloud.releases import RolloutConfig, RolloutManager, cohort_of, rollout_status
from cloud.releases.config import CohortConfig, LimitsConfig, StageConfig, StagesConfig
from cloud.store.db import CloudStore

H = 3600.0
T0 = 1_800_000_000.0
DEVICES = [f"m-{i:02d}" for i in range(24)]
REF = ReleaseRef("collar", "2", "e" * 64)
EDGES = {("shadow", "canary"), ("canary", "fleet"), ("fleet", "completed"), ("shadow", "halted"),
         ("canary", "halted"), ("fleet", "halted"), ("halted", "rolled_back")}
CONFIG = RolloutConfig(
    cohorts=CohortConfig(shadow_percent=40.0, canary_percent=20.0),
    stages=StagesConfig(StageConfig(2.0, 0.1, 0), StageConfig(4.0, 0.2, 2), StageConfig(1.0, 0.0, 0)),
    limits=LimitsConfig(ack_timeout_hours=6.0, max_failed_installs=3, min_labelled=4,
                        min_device_days_for_rates=0.5, min_notified_for_ignore=4),
)


class RolloutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = CloudStore()
        check_release(self.store, {}, None, candidate_ref=REF, now=T0)
        self.mgr = RolloutManager(self.store, CONFIG)
        self.rid = self.mgr.start(REF, DEVICES, T0)
        self.now = T0
        self.inflight: dict[str, str] = {}
        self.cohort = {d: cohort_of(d, CONFIG) for d in DEVICES}
        self.state = "shadow"
        self.n_alerts = 0

    @rule(hours=st.sampled_from([0.5, 1.0, 2.0, 2.0, 7.0]))
    def tick(self, hours: float) -> None:
        self.now += hours * H
        before = self.state
        # outstanding commands older than the ack timeout are dropped by the manager
        actions = self.mgr.tick(self.now)
        self.state = self.store.backend.execute("SELECT state FROM rollouts WHERE id = ?", [self.rid]).fetchone()[0]
        event(f"state {self.state}")
        if before in ("completed", "rolled_back"):
            assert actions == []
        for a in actions:
            prev = self.inflight.get(a.device_id)
            assert prev is None or a.command_name == "rollback", (prev, a)
            if self.cohort[a.device_id] == "fleet" and a.command_name != "rollback":
                assert self.state == "fleet"
            if a.command_name == "promote" and self.cohort[a.device_id] != "canary":
                assert self.state == "fleet"
            if a.command_name == "rollback":
                assert self.state == "halted"
            self.inflight[a.device_id] = a.command_name
        devices = {r["device_id"]: r for r in self.store.backend.query(
            "SELECT * FROM rollout_devices WHERE rollout_id = ?", [self.rid])}
        for d in list(self.inflight):
            if devices[d]["outstanding"] != self.inflight[d]:
                del self.inflight[d]  # timed out (now failed)

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data(), outcome=st.sampled_from(["ok", "ok", "ok", "ok", "fail", "lost"]))
    def reply(self, data: st.DataObject, outcome: str) -> None:
        device = data.draw(st.sampled_from(sorted(self.inflight)))
        command = self.inflight.pop(device)
        if outcome == "lost":
            self.inflight[device] = command
            return
        assert self.mgr.on_reply(device, command, outcome == "ok", outcome, self.now)
        assert not self.mgr.on_reply(device, command, True, "duplicate", self.now)

    @rule(hours=st.sampled_from([1.0, 2.0]))
    def happy_step(self, hours: float) -> None:
        """A tick whose commands all succeed at once (lets random runs get far)."""
        self.tick(hours)
        self.reply_all(None)

    @rule(fail=st.sampled_from([None, None, None, 0]))
    def reply_all(self, fail: int | None) -> None:
        for i, (device, command) in enumerate(sorted(self.inflight.items())):
            assert self.mgr.on_reply(device, command, i != fail, "batch", self.now)
        self.inflight.clear()

    @rule(bad=st.sampled_from([False, False, False, True]))
    def quality(self, bad: bool) -> None:
        rows = self.store.backend.query("SELECT device_id, state FROM rollout_devices WHERE rollout_id = ?",
                                   [self.rid])
        for r in rows:
            promoted = r["state"] == "promoted"
            self.n_alerts += 1
            aid = f"q{self.n_alerts}"
            add_alert(self.store, aid, self.now + 1, device_id=r["device_id"])
            good = not (bad and promoted)
            add_feedback(self.store, aid, "confirm" if good else "dismiss", self.now + 2,
                         device_id=r["device_id"])

    @invariant()
    def transitions_follow_the_diagram(self) -> None:
        rows = self.store.backend.execute("SELECT from_state, to_state FROM rollout_events WHERE rollout_id = ? "
                                     "AND kind = 'transition' ORDER BY id", [self.rid]).fetchall()
        assert rows[0] == (None, "shadow")
        for e in rows[1:]:
            assert tuple(e) in EDGES, e
        assert rows[-1][1] == self.state

    def teardown(self) -> None:
        assert rollout_status(self.store, self.rid)["state"] == self.state

    @invariant()
    def terminal_states_are_clean(self) -> None:
        states = {r["state"] for r in self.store.backend.query(
            "SELECT state FROM rollout_devices WHERE rollout_id = ?", [self.rid])}
        if self.state == "rolled_back":
            assert states <= {"pending", "rolled_back", "failed"}
        if self.state == "completed":
            assert states <= {"promoted", "failed"}
        if self.state in ("shadow", "canary"):
            fleet_states = {r["state"] for r in self.store.backend.query(
                "SELECT state FROM rollout_devices WHERE rollout_id = ? AND cohort = 'fleet'", [self.rid])}
            assert fleet_states <= {"pending"}


TestRolloutMachine = RolloutMachine.TestCase
TestRolloutMachine.settings = settings(max_examples=20, stateful_step_count=50, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
