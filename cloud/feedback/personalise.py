"""Personalisation from feedback: change one individual's thresholds, on that device only.

- "normal_for_her" on an alert -> per metric an ``accept_new_normal`` row: the device re-baselines
  that metric, and the cloud treats deviations up to ``new_normal_factor`` x the accepted one
  (same direction) as normal.
- ``dismissals_to_widen`` dismissals of alerts with the same metric set within
  ``dismissal_window_s`` -> per metric a ``widen`` row: the device multiplies that metric's
  threshold by ``widen_factor``, and the cloud treats deviations up to ``widen_factor`` x the
  largest dismissed one as normal. Dismissals used once are not counted again.

The rules read these rows through ``cloud.rules.personal`` (condition ``personalised``), so the
effect shows in the very next decision. ``personalisation_commands`` hands out the config
commands not yet sent, for the aggregator to sign and publish.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cloud.rules.policy import NotificationPolicy
from cloud.store.db import CloudStore
from cloud.store.feedback import FeedbackRepository

logger = logging.getLogger(__name__)

COMMAND_NAME = "config"


def _deviations(alert: dict[str, Any]) -> dict[str, tuple[int, float | None]]:
    """metric -> (direction, |observed - baseline| or None when the device sent no values)."""
    metrics = json.loads(alert["metrics"] or "[]")
    dirs = json.loads(alert.get("directions") or "{}")
    base = json.loads(alert.get("baseline") or "{}")
    obs = json.loads(alert.get("observed") or "{}")
    out: dict[str, tuple[int, float | None]] = {}
    for m in metrics:
        d = int(dirs.get(m, 0) or 0)
        if m in base and m in obs:
            dev = obs[m] - base[m]
            if d == 0:
                d = 1 if dev > 0 else -1 if dev < 0 else 0
            out[m] = (d, abs(dev))
        else:
            out[m] = (d, None)
    return out


def _insert(repo: FeedbackRepository, alert: dict[str, Any], metric: str, action: str, factor: float,
            direction: int, threshold: float | None, reason: str, ts: float) -> int:
    return repo.add_personalisation({
        "individual_id": alert["individual_id"], "device_id": alert["device_id"], "metric": metric,
        "action": action, "factor": factor, "reason": reason, "ts": ts, "command_sent_at": None,
        "direction": direction, "threshold": threshold, "alert_id": alert["alert_id"]})


def personalise_after(store: CloudStore, policy: NotificationPolicy, alert: dict[str, Any],
                      action: str, ts: float, feedback_id: int) -> tuple[int, ...]:
    """Create personalisation rows warranted by one new feedback row; returns their ids."""
    s = policy.settings
    repo = FeedbackRepository(store.backend)
    ids: list[int] = []
    if action == "normal_for_her":
        with store.backend.transaction():
            for m, (d, dev) in _deviations(alert).items():
                th = None if dev is None else dev * s.new_normal_factor
                ids.append(_insert(repo, alert, m, "accept_new_normal", s.new_normal_factor, d, th,
                                   f"owner said normal for her on alert {alert['alert_id']}", ts))
            repo.consume([feedback_id], ids[0] if ids else None)
    elif action == "dismiss":
        dismissed = repo.unconsumed_dismissals(alert["individual_id"], alert["metrics"],
                                               ts - s.dismissal_window_s, ts)
        by_alert = {d["alert_id"]: d for d in dismissed}
        if len(by_alert) < s.dismissals_to_widen:
            return ()
        worst: dict[tuple[str, int], float | None] = {}
        for a in by_alert.values():
            for m, (d, dev) in _deviations(a).items():
                prev = worst.get((m, d))
                worst[(m, d)] = dev if prev is None else (prev if dev is None else max(prev, dev))
        reason = (f"{len(by_alert)} dismissals of {','.join(json.loads(alert['metrics']))} "
                  f"within {s.dismissal_window_s / 86400:g} days")
        with store.backend.transaction():
            for (m, d), dev in sorted(worst.items()):
                th = None if dev is None else dev * s.widen_factor
                ids.append(_insert(repo, alert, m, "widen", s.widen_factor, d, th, reason, ts))
            repo.consume([int(d["fid"]) for d in dismissed], ids[0])
    if ids:
        logger.info("feedback.personalised", extra={"individual_id": alert["individual_id"],
                                                     "device_id": alert["device_id"], "action": action,
                                                     "personalisation_ids": ids})
    return tuple(ids)


def personalisation_commands(store: CloudStore, now: float) -> list[tuple[str, str, dict[str, Any]]]:
    """Config commands not yet handed out, oldest first: ``(device_id, "config", args)`` with
    args ``{"individual_id", "action": "accept_new_normal"|"widen", "metric", "factor",
    "direction", "threshold", "personalisation_id", "reason"}``. Each is marked sent (``now``)."""
    return [(r["device_id"], COMMAND_NAME, {
        "individual_id": r["individual_id"], "action": r["action"], "metric": r["metric"],
        "factor": r["factor"], "direction": r["direction"], "threshold": r["threshold"],
        "personalisation_id": r["id"], "reason": r["reason"]})
        for r in FeedbackRepository(store.backend).claim_unsent(now)]


def personalisations(store: CloudStore, individual_id: str | None = None) -> list[dict[str, Any]]:
    """All personalisation rows (for the CLI), oldest first."""
    return FeedbackRepository(store.backend).personalisations(individual_id)
