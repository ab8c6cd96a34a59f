"""Recording feedback: explicit (confirm, dismiss, normal_for_her, label) and implicit (delivered,
opened, acted, ignored), one ``feedback`` row each, stored per alert, individual and model version.

An alert's ``state`` follows the feedback: an explicit verdict wins over implicit signals, and the
latest explicit verdict (by feedback ts) wins over earlier ones. Explicit answers and "acted" mark
the alert's incident answered (no more reminders); dismiss and normal_for_her also close it.
Redelivered feedback (same alert, action and ts) is stored once. A ``label`` with an empty
``alert_id`` is an unprompted report (e.g. label "missed": the owner saw a problem no alert
caught); it is stored with the individual's latest device and model version.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cloud.feedback.clock import WALL_SLACK_S, data_clock_offsets
from cloud.feedback.errors import (
    FeedbackError,
    InvalidFeedbackError,
    UnknownAlertError,
    UnknownIndividualError,
    WrongIndividualError,
)
from cloud.rules.notify import close_incident
from cloud.rules.policy import NotificationPolicy
from cloud.store.db import CloudStore
from cloud.store.feedback import FeedbackRepository
from cloud.timestamps import FUTURE_SLACK_S
from shared.schemas import FEEDBACK_ACTIONS, Feedback, SchemaError, decode
from shared.topics import TopicError, individual_id_from_topic

logger = logging.getLogger(__name__)

EXPLICIT = ("confirm", "dismiss", "normal_for_her", "label")
IMPLICIT = ("delivered", "opened", "acted", "ignored")
ANSWERING = ("confirm", "dismiss", "normal_for_her", "label", "acted")
_VERDICT_STATE = {"confirm": "confirmed", "dismiss": "dismissed", "normal_for_her": "normal_for_her"}
# implicit action -> the states it may move an alert out of
_IMPLICIT_FROM = {
    "delivered": ("notified",),
    "opened": ("notified", "delivered", "ignored"),
    "acted": ("notified", "delivered", "opened", "ignored"),
    "ignored": ("notified", "delivered"),
}
MAX_LABEL = 200

#: rejections since start, by error class name (also stored in the store's ``rejections`` table)
ERROR_COUNTS: Counter[str] = Counter()

_default_policy: NotificationPolicy | None = None


def default_policy() -> NotificationPolicy:
    global _default_policy
    if _default_policy is None:
        _default_policy = NotificationPolicy.from_toml()
    return _default_policy


@dataclass(frozen=True)
class FeedbackResult:
    feedback_id: int | None
    alert_id: str
    action: str
    state: str
    duplicate: bool
    personalisation_ids: tuple[int, ...] = ()


def count_rejection(store: CloudStore, source: str, exc: FeedbackError, *, keep: bool = True) -> None:
    """Count a refused feedback; ``keep``: also store and log it (False when the caller, the
    aggregator, keeps and logs its own rejections in batches)."""
    ERROR_COUNTS[type(exc).__name__] += 1
    if not keep:
        return
    try:
        store.reject(f"feedback:{source}", f"{type(exc).__name__}: {exc}", 0)
    except Exception:  # counting must never turn a rejection into a crash
        logger.exception("feedback.reject_store_failed")
    logger.warning("feedback.rejected", extra={"error": type(exc).__name__, "reason": str(exc),
                                               "source": source})


def _validate(fb: Feedback, source: str) -> None:
    if fb.action not in FEEDBACK_ACTIONS:
        raise InvalidFeedbackError(f"action {fb.action!r} is unknown: expected one of {', '.join(FEEDBACK_ACTIONS)}")
    if isinstance(fb.ts, bool) or not isinstance(fb.ts, int | float) or not math.isfinite(fb.ts):
        raise InvalidFeedbackError(f"ts {fb.ts!r} is not a finite time in seconds")
    # a verdict dated ahead of the cloud's clock would win over every later answer (the latest by time
    # wins); the sweep's own answers are dated by the cloud's rule clock, which a test or replay may
    # set ahead of the wall clock, and are not an owner's input
    if source != "sweep" and fb.ts > time.time() + FUTURE_SLACK_S:
        raise InvalidFeedbackError(f"ts {fb.ts:.6g} is {(fb.ts - time.time()) / 86400:.3g} days after the cloud's "
                                   "clock: send the time the owner answered, in epoch seconds")
    if not isinstance(fb.label, str) or len(fb.label) > MAX_LABEL:
        raise InvalidFeedbackError(f"label must be text of at most {MAX_LABEL} characters")
    if fb.action == "label" and not fb.label.strip():
        raise InvalidFeedbackError("action 'label' needs a non-empty label: send the owner's words")
    if not isinstance(fb.alert_id, str) or not fb.alert_id:
        raise InvalidFeedbackError("alert_id is empty: send the id of the alert being answered "
                                   "(only action 'label' may come without one, e.g. label 'missed')")


def record_feedback(store: CloudStore, fb: Feedback, *, policy: NotificationPolicy | None = None,
                    source: str = "api", keep_rejection: bool = True) -> FeedbackResult:
    """Validate and store one feedback message; update the alert, its incident and, for
    normal_for_her or repeated dismissals, the individual's personalisation.

    Raises InvalidFeedbackError, UnknownAlertError or WrongIndividualError (each counted in
    ``ERROR_COUNTS`` and the store's rejections) and changes nothing in that case.
    """
    if fb.alert_id == "" and fb.action == "label":
        return _record_unprompted(store, fb, source, keep_rejection)
    repo = FeedbackRepository(store.backend)
    try:
        _validate(fb, source)
        found = repo.alert(fb.alert_id)
        if found is None:
            raise UnknownAlertError(f"alert {fb.alert_id!r:.80} is unknown: answer an alert id from "
                                    "GET /alerts or the owner notification")
        if found["individual_id"] != fb.individual_id:
            raise WrongIndividualError(f"alert {fb.alert_id!r} belongs to another individual, not "
                                       f"{fb.individual_id!r}: send feedback for that individual's alerts")
    except FeedbackError as exc:
        count_rejection(store, source, exc, keep=keep_rejection)
        raise
    from cloud.feedback.personalise import personalise_after  # avoids an import cycle

    pol = policy or default_policy()
    ts = float(fb.ts)
    with store.backend.transaction():
        # PostgreSQL: one writer per individual (its incidents, personalisation); SQLite's lock is whole
        store.backend.lock_keys([fb.individual_id])
        alert = repo.alert(fb.alert_id) or found  # fresh, under the write lock (alerts are never deleted)
        fid = repo.add_feedback(fb.alert_id, fb.individual_id, alert["device_id"], fb.action, fb.label, ts,
                                alert["model_version"], time.time())
        if fid is None:
            return FeedbackResult(None, fb.alert_id, fb.action, alert["state"], True)
        state = _next_state(repo, alert, fb.action, ts)
        if state != alert["state"]:
            repo.set_alert_state(fb.alert_id, state)
        if alert["incident_id"] and fb.action in ANSWERING:
            repo.mark_incident_answered(alert["incident_id"])
        if alert["incident_id"] and fb.action in ("dismiss", "normal_for_her"):
            close_incident(store, alert["incident_id"], ts)
        pids = personalise_after(store, pol, dict(alert, state=state), fb.action, ts, fid)
    logger.info("feedback.recorded", extra={"alert_id": fb.alert_id, "individual_id": fb.individual_id,
                                            "action": fb.action, "state": state, "source": source})
    return FeedbackResult(fid, fb.alert_id, fb.action, state, False, pids)


def _record_unprompted(store: CloudStore, fb: Feedback, source: str, keep_rejection: bool = True) -> FeedbackResult:
    """A label without an alert, e.g. an owner reporting a problem the device missed
    (label "missed"). Stored with the individual's latest device and model version."""
    try:
        _validate(Feedback(alert_id="-", individual_id=fb.individual_id, action=fb.action,
                           ts=fb.ts, label=fb.label), source)
        repo = FeedbackRepository(store.backend)
        last = repo.latest_record(fb.individual_id)
        if last is None:
            raise UnknownIndividualError(f"individual {fb.individual_id!r} has sent no data: "
                                         "report misses for an individual with a device")
    except FeedbackError as exc:
        count_rejection(store, source, exc, keep=keep_rejection)
        raise
    try:
        model_version = json.loads(last[1]).get("model_version")
    except (ValueError, AttributeError):
        model_version = None
    fid = repo.add_feedback("", fb.individual_id, last[0], "label", fb.label, float(fb.ts),
                            None if model_version is None else str(model_version), time.time())
    dup = fid is None
    logger.info("feedback.unprompted_label", extra={"individual_id": fb.individual_id,
                                                   "label": fb.label, "duplicate": dup})
    return FeedbackResult(fid, "", "label", "", dup)


def _next_state(repo: FeedbackRepository, alert: dict[str, Any], action: str, ts: float) -> str:
    state = str(alert["state"])
    if action in _VERDICT_STATE:
        return state if repo.has_later_verdict(alert["alert_id"], ts) else _VERDICT_STATE[action]
    if action in _IMPLICIT_FROM and state in _IMPLICIT_FROM[action]:
        return {"delivered": "delivered", "opened": "opened", "acted": "acted",
                "ignored": "ignored"}[action]
    return state


def implicit_sweep(store: CloudStore, now: float, ignore_after_s: float | None = None) -> int:
    """Mark notified alerts with no interaction for ``ignore_after_s`` (default: the default
    policy's setting) as 'ignored', with an implicit feedback row each. Returns how many.

    ``notified_at`` is in the event's time: each individual's "now" is shifted onto its data
    clock (cloud.feedback.clock), so alerts replayed from an old trace are not swept at once."""
    after = default_policy().settings.ignore_after_s if ignore_after_s is None else ignore_after_s
    # a wall-clock ``now`` is moved onto each individual's data clock; a simulation's clock
    # (already event time) is not
    offsets = data_clock_offsets(store.backend) if abs(now - time.time()) < WALL_SLACK_S else {}
    rows = [a for a in FeedbackRepository(store.backend).unanswered_alerts(now - after)
            if a["notified_at"] <= now - offsets.get(a["individual_id"], 0.0) - after]
    n = 0
    for a in rows:
        fb = Feedback(alert_id=a["alert_id"], individual_id=a["individual_id"], action="ignored",
                      ts=float(now))
        if not record_feedback(store, fb, source="sweep").duplicate:
            n += 1
    if n:
        logger.info("feedback.ignored_swept", extra={"count": n})
    return n


def feedback_from_mqtt(store: CloudStore, topic: str, payload: bytes, *,
                       policy: NotificationPolicy | None = None, keep_rejection: bool = True) -> FeedbackResult:
    """Route one owner_feedback MQTT message: decode, check the topic's individual, record.

    Every failure is a counted FeedbackError (InvalidFeedbackError for undecodable payloads or
    a topic/individual mismatch), so the caller logs one line and carries on;
    ``keep_rejection=False``: the caller stores that line too (the aggregator, in batches).
    """
    try:
        try:
            topic_ind = individual_id_from_topic(topic)
            msg = decode(payload)
        except (SchemaError, TopicError) as exc:
            raise InvalidFeedbackError(str(exc)) from None
        except (TypeError, ValueError, RecursionError) as exc:  # decoder defects must not escape
            raise InvalidFeedbackError(f"payload cannot be decoded ({type(exc).__name__}): "
                                       "publish JSON made by shared.schemas.encode") from None
        if not isinstance(msg, Feedback):
            raise InvalidFeedbackError(f"expected a feedback message on {topic}, found type {msg.type!r}")
        if msg.individual_id != topic_ind:
            raise WrongIndividualError(f"feedback for {msg.individual_id!r} arrived on {topic_ind!r}'s "
                                       "topic: publish on the individual's own feedback topic")
    except FeedbackError as exc:
        count_rejection(store, "mqtt", exc, keep=keep_rejection)
        raise
    return record_feedback(store, msg, policy=policy, source="mqtt", keep_rejection=keep_rejection)


def list_alerts(store: CloudStore, individual_id: str, limit: int = 50,
                since: float | None = None) -> list[dict[str, Any]]:
    """Latest alerts of one individual, newest first, with decoded JSON columns."""
    out = []
    for r in FeedbackRepository(store.backend).alerts_of(individual_id, max(1, min(limit, 1000)), since):
        for k in ("metrics", "directions", "baseline", "observed"):
            if r.get(k):
                r[k] = json.loads(r[k])
        out.append(r)
    return out
