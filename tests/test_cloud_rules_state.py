"""A hypothesis state machine over events, owner feedback and the periodic tick, checking the
incident and reminder invariants after every step."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from recs import record_of
from storerows import count, row, rows

from cloud.feedback import FeedbackError, implicit_sweep, record_feedback
from cloud.rules.notify import NotificationPolicy, due_renotifications, handle_event
from cloud.store.db import CloudStore
from shared.schemas import Feedback, UplinkBatch

POLICY = NotificationPolicy.from_toml()
S = POLICY.settings
INDS = ("rex", "bella", "luna")


class Loop(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = CloudStore()
        self.t = 30 * 86400.0
        self.seq = 0
        self.alerts: list[str] = []
        self.reminders: dict[str, int] = {}
        self.last_sent: dict[str, float] = {}

    def teardown(self) -> None:
        self.store.close()

    @rule(dt=st.floats(0, 6 * 3600))
    def wait(self, dt):
        self.t += dt

    @rule(ind=st.sampled_from(INDS), sev=st.sampled_from(["info", "warning", "critical"]),
          score=st.floats(0, 1), metrics=st.sampled_from([["hr"], ["hr", "act"], ["sleep"]]),
          age=st.floats(0, 3 * 3600))
    def event(self, ind, sev, score, metrics, age):
        self.seq += 1
        n = len(metrics)
        body = {"start_ts": self.t - age, "ts": self.t, "metrics": metrics, "directions": [1] * n,
                "score": score, "severity": sev, "kind": "sustained", "baseline": [1.0] * n,
                "observed": [1.0 + score] * n, "model_version": "m", "detector_version": "d"}
        rec = record_of(self.seq, "event", self.t, ind, body)
        self.store.store_batch(UplinkBatch(f"dev-{ind}", (rec,)))
        d = handle_event(self.store, POLICY, f"dev-{ind}", rec)
        self.alerts.append(d.alert_id)
        if d.action == "notify":
            assert d.incident_id is not None
            self.last_sent[d.incident_id] = self.t

    @rule(i=st.integers(0, 10**6), action=st.sampled_from(
        ["confirm", "dismiss", "normal_for_her", "label", "delivered", "opened", "acted"]),
        wrong=st.booleans())
    def feedback(self, i, action, wrong):
        if not self.alerts:
            return
        aid = self.alerts[i % len(self.alerts)]
        ind = row(self.store, "alerts", aid)["individual_id"]
        if wrong:
            ind = next(x for x in INDS if x != ind)
        try:
            record_feedback(self.store, Feedback(aid, ind, action, self.t, label="x"))
        except FeedbackError:
            assert wrong

    @rule()
    def tick(self):
        open_unanswered = {r["incident_id"]: r for r in rows(
            self.store, "SELECT * FROM incidents WHERE closed_at IS NULL AND answered = 0")}
        for d in due_renotifications(self.store, POLICY, self.t):
            inc = open_unanswered.get(d.incident_id)
            assert inc is not None, "a reminder for an answered or closed incident"
            if d.rule == "renotify":
                assert inc["severity"] in S.renotify_severities
                assert self.t - self.last_sent[d.incident_id] >= S.renotify_after_s
                assert inc["notify_count"] < S.max_notifications_per_incident
                self.reminders[d.incident_id] = self.reminders.get(d.incident_id, 0) + 1
            else:
                assert d.rule == "deferred-delivery" and inc["notify_count"] == 0
            self.last_sent[d.incident_id] = self.t
        implicit_sweep(self.store, self.t, S.ignore_after_s)

    @invariant()
    def one_open_incident_per_individual(self):
        per = rows(self.store, "SELECT individual_id, COUNT(*) AS n FROM incidents WHERE closed_at IS NULL "
                   "GROUP BY individual_id")
        assert all(r["n"] == 1 for r in per)

    @invariant()
    def every_alert_decided_once_and_notified_ones_grouped(self):
        assert count(self.store, "alerts") == len(self.alerts)
        assert count(self.store, "alerts", "action = 'notify' AND incident_id IS NULL") == 0

    @invariant()
    def reminders_are_bounded(self):
        assert all(n <= S.max_notifications_per_incident - 1 for n in self.reminders.values())


Loop.TestCase.settings = settings(max_examples=20, stateful_step_count=30, deadline=None)
TestLoop = Loop.TestCase
