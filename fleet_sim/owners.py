"""Simulated owners: they answer alerts from the ground truth, with noise, and sometimes ignore them.

``OwnerSim`` is the notifier the aggregator calls for every notification it sends
(``send(decision, event_body)``). Per new alert it draws, at the notification's sim time:

- ignore (``p_ignore``): no interaction (the cloud's sweep marks it ``ignored`` a day later);
- open only (``p_open_only``): ``opened`` after a few minutes, no verdict;
- answer: ``opened``, then a verdict minutes to hours later: ``confirm`` when the alert falls in
  one of the individual's conditions, else ``normal_for_her`` (individuals with a quirk, with
  ``p_normal_for_her``) or ``dismiss``; with probability ``p_wrong`` the verdict is wrong
  (confirm <-> dismiss).

Misses: some time after a condition ended without any notification, the owner (``p_report_miss``)
opens the app's alert list and confirms the held alerts of that time (they become miss cases),
or, when there are none, reports ``label "missed"`` with no alert id.

Answers are queued with their sim time; ``due(now)`` hands out those due, as
``shared.schemas.Feedback`` messages for the owner app to publish on
``shared.topics.owner_feedback(individual)``.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from fleet_sim.fleet import SimIndividual
from shared.schemas import Feedback, FeedbackAction

logger = logging.getLogger(__name__)
MINUTE, HOUR = 60.0, 3600.0


@dataclass(frozen=True)
class OwnerConfig:
    p_wrong: float = 0.10
    p_ignore: float = 0.12
    p_open_only: float = 0.08
    p_normal_for_her: float = 0.5
    p_report_miss: float = 0.6
    answer_within_h: float = 10.0


class OwnerSim:
    """All owners of the fleet (one random stream, deterministic for a seed)."""

    def __init__(self, fleet: list[SimIndividual], start_ts: float, cfg: OwnerConfig | None = None,
                 seed: int = 7) -> None:
        self.by_ind = {s.individual_id: s for s in fleet}
        self.start_ts = start_ts
        self.cfg = cfg or OwnerConfig()
        self.rng = np.random.default_rng(seed + 991)
        self.seen: set[str] = set()
        self.queue: list[tuple[float, int, Feedback]] = []
        self._n = 0
        self.now = start_ts
        self.counts: Counter[str] = Counter()
        self.answers: dict[str, tuple[str, bool]] = {}  # alert_id -> (action, truthful)
        self.miss_checked: set[tuple[str, float]] = set()

    def _push(self, ts: float, fb: Feedback) -> None:
        self._n += 1
        heapq.heappush(self.queue, (ts, self._n, fb))
        self.counts[fb.action] += 1

    # ---- the notifier interface ------------------------------------------------------------------
    def send(self, decision: Any, event_body: dict[str, Any]) -> None:
        aid = decision.alert_id
        if aid in self.seen:
            self.counts["reminder_or_repeat"] += 1
            return
        self.seen.add(aid)
        s = self.by_ind.get(decision.individual_id)
        if s is None:
            return
        t = max(float(decision.ts), self.now)
        c = self.cfg
        r = self.rng.random()
        if r < c.p_ignore:
            self.counts["ignored_by_owner"] += 1
            return
        t_open = t + float(self.rng.uniform(2, 90)) * MINUTE
        self._push(t_open, Feedback(aid, decision.individual_id, "opened", t_open))
        if r < c.p_ignore + c.p_open_only:
            return
        real = s.condition_at(float(decision.ts) - self.start_ts) is not None
        truthful = self.rng.random() >= c.p_wrong
        if real == truthful:
            action = "confirm"
        elif s.quirk and s.quirk_at(float(decision.ts) - self.start_ts) and \
                self.rng.random() < c.p_normal_for_her:
            action = "normal_for_her"
        else:
            action = "dismiss"
        t_ans = t_open + float(self.rng.uniform(0.05, c.answer_within_h)) * HOUR
        self.answers[aid] = (action, truthful)
        self._push(t_ans, Feedback(aid, decision.individual_id, cast(FeedbackAction, action), t_ans))

    # ---- misses ------------------------------------------------------------------------------------
    def check_misses(self, now: float, notified_in: Any, held_in: Any) -> None:
        """For conditions that ended 12-36 h before ``now`` with no notification in them: maybe
        report. ``notified_in(ind, lo, hi)`` -> bool; ``held_in(ind, lo, hi)`` -> held alert ids."""
        for s in self.by_ind.values():
            for c in s.alert_conditions():
                key = (s.individual_id, c.start)
                end = self.start_ts + c.end
                if key in self.miss_checked or not end + 12 * HOUR <= now:
                    continue
                self.miss_checked.add(key)
                lo, hi = self.start_ts + c.start, end + 12 * HOUR
                if notified_in(s.individual_id, lo, hi) or self.rng.random() >= self.cfg.p_report_miss:
                    continue
                held = held_in(s.individual_id, lo, hi)
                t = now + float(self.rng.uniform(0, 2)) * HOUR
                if held:
                    for aid in held[:3]:
                        self._push(t, Feedback(aid, s.individual_id, "confirm", t))
                        self.answers[aid] = ("confirm", True)
                    self.counts["miss_confirmed_held"] += len(held[:3])
                else:
                    self._push(t, Feedback("", s.individual_id, "label", t, label="missed"))
                    self.counts["miss_reported"] += 1

    def due(self, now: float) -> list[Feedback]:
        """Feedback whose sim time has come, oldest first."""
        out = []
        while self.queue and self.queue[0][0] <= now:
            out.append(heapq.heappop(self.queue)[2])
        return out
