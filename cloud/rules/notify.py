"""Deciding what to do with each incoming deviation event: notify | collect_more | uncertain | suppress.

Plain functions over a store (``cloud.rules.history.RulesStore``, which the cloud store is): no
MQTT and no SQL in here; the store's ``AlertRepository`` holds the statements. The aggregator stores a record, then calls
``handle_event``; the decision, its reason and the rule that made it land in the ``alerts`` table.

Clock: ``now`` is the decision time. It defaults to the event's own ``ts`` so that replayed or
simulated days decide deterministically; a live aggregator passes ``time.time()``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from cloud.rules.history import AlertHistory, RulesStore
from cloud.rules.personal import within_thresholds
from cloud.rules.policy import NotificationPolicy, Rule, Settings, When, in_window, severity_rank
from shared.records import Event, Record

logger = logging.getLogger(__name__)

Action = Literal["notify", "collect_more", "uncertain", "suppress"]
_STATE = {"notify": "notified", "collect_more": "collecting", "uncertain": "held",
          "suppress": "suppressed"}
NO_RULE = "(no rule matched)"


class RulesError(ValueError):
    """Base of the notification-rule errors (bad events, unknown alerts)."""


class EventBodyError(RulesError):
    """A record handed to the rules is not an event (bodies are typed: shared.records.Event)."""


@dataclass(frozen=True)
class Decision:
    alert_id: str
    action: Action
    reason: str
    rule: str
    incident_id: str | None
    individual_id: str
    device_id: str
    seq: int
    ts: float
    incarnation: str = ""


def alert_id_for(device_id: str, seq: int, incarnation: str = "") -> str:
    """The alert of the event record (device_id, incarnation, seq): ``device:incarnation:seq``
    (``device:seq`` for a record of a v1 device, which has no incarnation)."""
    return f"{device_id}:{incarnation}:{seq}" if incarnation else f"{device_id}:{seq}"


# ---------------------------------------------------------------- individual preferences

def set_individual_prefs(store: RulesStore, individual_id: str, *, tz_offset_h: float | None = None,
                         silenced_until: float | None = None, quiet_start: str | None = None,
                         quiet_end: str | None = None) -> None:
    """Owner settings stored in the database (they win over the rules file's [individuals]);
    a setting not given keeps its stored value."""
    values: dict[str, Any] = {}
    for k, v in (("tz_offset_h", tz_offset_h), ("silenced_until", silenced_until),
                 ("quiet_start", quiet_start), ("quiet_end", quiet_end)):
        if v is not None:
            values[k] = v
    store.alerts.set_prefs(individual_id, values)


@dataclass(frozen=True)
class LocalPrefs:
    tz_offset_h: float
    silenced: bool
    quiet_start: str
    quiet_end: str


def local_prefs(store: RulesStore, policy: NotificationPolicy, individual_id: str, t: float,
                event_tz_h: float | None = None) -> LocalPrefs:
    return prefs_from(store.alerts.prefs(individual_id), policy, individual_id, t, event_tz_h)


def prefs_from(row: Mapping[str, Any], policy: NotificationPolicy, individual_id: str, t: float,
               event_tz_h: float | None = None) -> LocalPrefs:
    """The individual's settings at ``t``: the stored owner settings (``row``) win over the rules
    file's [individuals], which win over the event's own time zone and the defaults."""
    s = policy.settings
    file_prefs = policy.individuals.get(individual_id)
    tz = row.get("tz_offset_h")
    if tz is None:
        tz = file_prefs.tz_offset_h if file_prefs and file_prefs.tz_offset_h is not None else event_tz_h
    if tz is None:
        tz = s.default_tz_offset_h
    silenced = bool(file_prefs and file_prefs.silenced) or (
        row.get("silenced_until") is not None and t < row["silenced_until"])
    qs = row.get("quiet_start") or (file_prefs and file_prefs.quiet_start) or s.quiet_start
    qe = row.get("quiet_end") or (file_prefs and file_prefs.quiet_end) or s.quiet_end
    return LocalPrefs(float(tz), silenced, qs, qe)


def local_seconds(t: float, tz_offset_h: float) -> float:
    return (t + tz_offset_h * 3600.0) % 86400.0


def in_quiet_hours(prefs: LocalPrefs, t: float) -> bool:
    return in_window(local_seconds(t, prefs.tz_offset_h), prefs.quiet_start, prefs.quiet_end)


# ---------------------------------------------------------------- facts the conditions read

class Facts:
    """Everything a condition can ask, computed lazily (only the questions a rule needs are put
    to the history)."""

    def __init__(self, history: AlertHistory, policy: NotificationPolicy, device_id: str,
                 record: Record, ev: Event, t: float, incident: dict[str, Any] | None,
                 incarnation: str = "") -> None:
        self.history, self.policy, self.device_id, self.record = history, policy, device_id, record
        self.ev, self.t, self.incident, self.incarnation = ev, t, incident, incarnation
        self.ind = record.individual_id

    @cached_property
    def prefs(self) -> LocalPrefs:
        return prefs_from(self.history.prefs(self.ind), self.policy, self.ind, self.t, self.ev.tz_offset_h)

    @cached_property
    def quiet_hours(self) -> bool:
        return in_quiet_hours(self.prefs, self.t)

    @cached_property
    def local_time(self) -> str:
        sec = int(local_seconds(self.t, self.prefs.tz_offset_h))
        return f"{sec // 3600:02d}:{sec % 3600 // 60:02d}"

    @cached_property
    def warming_up(self) -> bool:
        if self.ev.warming_up:
            return True
        if self.policy.settings.warmup_s <= 0:
            return False
        # this incarnation's first record: a reset device learns its baseline again
        first_ts = self.history.record_span(self.device_id, self.incarnation)[0]
        first = self.record.ts if first_ts is None else min(first_ts, self.record.ts)
        return self.record.ts - first < self.policy.settings.warmup_s

    @cached_property
    def stale(self) -> bool:
        """Decided long after it happened: by the decision clock, or by the device's own newest
        record (a backlog uploaded after a network cut is stale even when replayed)."""
        newest = self.history.record_span(self.device_id, self.incarnation)[1]
        latest = max(self.t, newest if newest is not None else self.t)
        return latest - self.record.ts > self.policy.settings.stale_after_s

    @cached_property
    def silenced(self) -> bool:
        return self.prefs.silenced

    @cached_property
    def metrics_json(self) -> str:
        return json.dumps(sorted(self.ev.metrics))

    @cached_property
    def duplicate(self) -> bool:
        """Same device, episode start and metric set already decided at this severity or above."""
        sevs = self.history.episode_severities(self.device_id, self.ind, self.ev.onset, self.metrics_json)
        return any(severity_rank(s) >= severity_rank(self.ev.severity) for s in set(sevs))

    @cached_property
    def incident_open(self) -> bool:
        return self.incident is not None

    @cached_property
    def escalates(self) -> bool:
        if self.incident is None:
            return True
        return severity_rank(self.ev.severity) > severity_rank(self.incident["severity"])

    @cached_property
    def recently_notified(self) -> bool:
        return self.history.notified_between(self.ind, self.metrics_json,
                                             self.t - self.policy.settings.cooldown_s, self.t)

    @cached_property
    def collecting(self) -> bool:
        return self.history.collecting_between(self.device_id, self.t - self.policy.settings.collect_duration_s,
                                               self.t)

    def recent_alerts(self, window_s: float) -> int:
        return self.history.alerts_between(self.ind, self.record.ts - window_s, self.record.ts) + 1

    @cached_property
    def personalised(self) -> bool:
        return within_thresholds(self.history.personal_thresholds(self.ind), self.ev)

    def placeholders(self) -> dict[str, Any]:
        return {"score": self.ev.score, "severity": self.ev.severity,
                "metrics": ",".join(self.ev.metrics), "n_metrics": len(self.ev.metrics),
                "individual_id": self.ind, "device_id": self.device_id,
                "local_time": self.local_time, "model_version": self.ev.model_version}


_BOOL_FACTS = ("quiet_hours", "warming_up", "stale", "silenced", "personalised", "duplicate",
               "incident_open", "escalates", "recently_notified", "collecting")


@functools.cache
def _bool_conditions(when: When) -> tuple[tuple[str, bool], ...]:
    """The yes/no facts a rule names, with the answer it wants (read once per rule, not per event)."""
    return tuple((name, want) for name in _BOOL_FACTS if (want := getattr(when, name)) is not None)


def matches(when: When, f: Facts) -> bool:
    """Do all of a rule's conditions hold? Cheap event checks first, store queries last."""
    ev = f.ev
    if when.severity is not None and ev.severity not in when.severity:
        return False
    if when.severity_at_least is not None and severity_rank(ev.severity) < severity_rank(when.severity_at_least):
        return False
    if when.score_below is not None and not ev.score < when.score_below:
        return False
    if when.score_at_least is not None and not ev.score >= when.score_at_least:
        return False
    if when.metrics_any is not None and not set(when.metrics_any) & set(ev.metrics):
        return False
    if when.metrics_all is not None and not set(when.metrics_all) <= set(ev.metrics):
        return False
    if when.metric_count_below is not None and not len(ev.metrics) < when.metric_count_below:
        return False
    if when.metric_count_at_least is not None and not len(ev.metrics) >= when.metric_count_at_least:
        return False
    if when.kind is not None and ev.kind not in when.kind:
        return False
    if when.local_time_between is not None:
        a, b = when.local_time_between
        if not in_window(local_seconds(f.t, f.prefs.tz_offset_h), a, b):
            return False
    for name, want in _bool_conditions(when):
        if bool(getattr(f, name)) != want:
            return False
    return not (when.recent_alerts_at_least is not None
                and f.recent_alerts(when.recent_window_s) < when.recent_alerts_at_least)


def evaluate(policy: NotificationPolicy, f: Facts) -> tuple[Rule | None, str]:
    """First matching rule (policy.rules is already priority-ordered) and its formatted reason.
    A health event (frozen camera, dropout, battery) is decided only by rules naming kind
    "health": device health has its own rules, apart from behaviour alerts."""
    health = f.ev.kind == "health"
    for rule in policy.rules:
        if health and not (rule.when.kind and "health" in rule.when.kind):
            continue
        if matches(rule.when, f):
            try:
                reason = rule.reason.format_map(f.placeholders()) if rule.reason else rule.name
            except (ValueError, KeyError, IndexError):
                reason = rule.reason
            return rule, reason
    return None, "no rule matched: held for review"


# ---------------------------------------------------------------- incidents

def idle_close_time(inc: Mapping[str, Any], s: Settings) -> float | None:
    """When an open incident closes for want of alerts (None: not while reminders are due).

    Two kinds wait longer: an incident whose alerts were all deferred (nothing sent yet) stays
    open for at least a day so quiet hours can end, and an unanswered incident that still has
    reminders due stays open until they are spent."""
    count = inc["notify_count"] or 0
    if count == 0:
        return float(inc["last_alert_at"] + max(s.incident_idle_close_s, 86400.0))
    if (not inc["answered"] and inc["severity"] in s.renotify_severities
            and count < s.max_notifications_per_incident):
        return None
    return float(max(inc["last_alert_at"] + s.incident_idle_close_s, inc["last_notified_at"] or 0.0))


def close_idle_incidents(store: RulesStore, policy: NotificationPolicy, t: float,
                         individual_id: str | None = None) -> int:
    """Close incidents with no alert for ``incident_idle_close_s`` (see :func:`idle_close_time`)."""
    repo = store.alerts
    closed = 0
    with repo.transaction():
        for inc in repo.open_incidents(individual_id):
            close_at = idle_close_time(inc, policy.settings)
            if close_at is not None and close_at <= t:
                repo.update_incident(inc["incident_id"], {"closed_at": close_at})
                closed += 1
    return closed


def open_incident(store: RulesStore, individual_id: str) -> dict[str, Any] | None:
    """The individual's newest open incident, or None."""
    rows = store.alerts.open_incidents(individual_id)
    return rows[0] if rows else None


def close_incident(store: RulesStore, incident_id: str, t: float) -> None:
    repo = store.alerts
    with repo.transaction():
        repo.close_incident(incident_id, t)


def incident_change(incident: Mapping[str, Any] | None, individual_id: str, alert_id: str, severity: str,
                    t: float, *, notify: bool) -> tuple[str, dict[str, Any]]:
    """(incident id, the new incident's row or the open one's changes) for an alert joining."""
    if incident is None:
        return f"inc:{alert_id}", {
            "incident_id": f"inc:{alert_id}", "individual_id": individual_id, "opened_at": t,
            "last_alert_at": t, "closed_at": None, "severity": severity,
            "notify_count": 1 if notify else 0, "last_notified_at": t if notify else None,
            "answered": 0, "first_alert_id": alert_id, "last_alert_id": alert_id, "alert_count": 1}
    upd: dict[str, Any] = {"last_alert_at": max(t, incident["last_alert_at"]),
                           "severity": max(incident["severity"], severity, key=severity_rank),
                           "last_alert_id": alert_id, "alert_count": (incident["alert_count"] or 0) + 1}
    if notify:
        upd["notify_count"] = (incident["notify_count"] or 0) + 1
        upd["last_notified_at"] = t
        upd["answered"] = 0  # a new notification needs a new answer
    return str(incident["incident_id"]), upd


def attach_to_incident(store: RulesStore, incident: dict[str, Any] | None, individual_id: str,
                       alert_id: str, severity: str, t: float, *, notify: bool) -> str:
    """Open an incident for this alert, or add the alert to the open ``incident``; ``notify``
    counts a notification (which needs a new answer). Returns the incident id."""
    incident_id, row = incident_change(incident, individual_id, alert_id, severity, t, notify=notify)
    if incident is None:
        store.alerts.add_incident(row)
    else:
        store.alerts.update_incident(incident_id, row)
    return incident_id


# ---------------------------------------------------------------- the handler

def _decision(row: dict[str, Any]) -> Decision:
    return Decision(alert_id=row["alert_id"], action=row["action"], reason=row["reason"],
                    rule=row["rule"], incident_id=row["incident_id"],
                    individual_id=row["individual_id"], device_id=row["device_id"],
                    seq=row["seq"], ts=row["ts"], incarnation=row.get("incarnation") or "")


def get_decision(store: RulesStore, alert_id: str) -> Decision | None:
    row = store.alerts.alert(alert_id)
    return _decision(row) if row else None


def decide(history: AlertHistory, policy: NotificationPolicy, device_id: str, record: Record, ev: Event,
           t: float, incarnation: str = "") -> tuple[Decision, dict[str, Any]]:
    """Decide on one event against ``history`` (pure: no database) and add the decision (and
    its incident) to it. Returns the decision and its ``alerts`` row."""
    ind = record.individual_id
    aid = alert_id_for(device_id, record.seq, incarnation)
    s = policy.settings
    for inc in history.open_incidents(ind):  # the individual's idle incidents close first
        close_at = idle_close_time(inc, s)
        if close_at is not None and close_at <= t:
            history.update_incident(inc["incident_id"], {"closed_at": close_at})
    opened = history.open_incidents(ind)
    incident = opened[0] if opened else None
    facts = Facts(history, policy, device_id, record, ev, t, incident, incarnation)
    rule, reason = evaluate(policy, facts)
    action: Action = rule.action if rule else "uncertain"
    state = "deferred" if rule is not None and rule.defer else _STATE[action]
    incident_id: str | None = None
    if ev.kind != "health" and rule is not None and (  # health never opens or joins a behaviour incident
            rule.opens_incident or (incident is not None and rule.joins_incident)):
        incident_id, change = incident_change(incident, ind, aid, ev.severity, t, notify=action == "notify")
        if incident is None:
            history.add_incident(change)
        else:
            history.update_incident(incident_id, change)
    row = {
        "alert_id": aid, "device_id": device_id, "incarnation": incarnation, "seq": record.seq,
        "individual_id": ind,
        "ts": record.ts, "start_ts": ev.onset, "action": action, "reason": reason,
        "rule": rule.name if rule else NO_RULE, "incident_id": incident_id,
        "severity": ev.severity, "metrics": facts.metrics_json, "score": ev.score,
        "model_version": ev.model_version, "detector_version": ev.detector_version,
        "notified_at": t if action == "notify" else None, "state": state, "decided_at": t,
        "directions": json.dumps(dict(zip(ev.metrics, ev.directions, strict=True)), sort_keys=True),
        "baseline": json.dumps(dict(zip(ev.metrics, ev.baseline, strict=False)), sort_keys=True),
        "observed": json.dumps(dict(zip(ev.metrics, ev.observed, strict=False)), sort_keys=True),
    }
    history.add_alert(row)
    return Decision(aid, action, reason, rule.name if rule else NO_RULE, incident_id, ind,
                    device_id, record.seq, record.ts, incarnation), row


@dataclass(frozen=True)
class Pending:
    """An event record waiting for its decision (one of a batch)."""

    device_id: str
    record: Record
    incarnation: str = ""
    now: float | None = None

    @property
    def alert_id(self) -> str:
        return alert_id_for(self.device_id, self.record.seq, self.incarnation)

    @property
    def t(self) -> float:
        return self.record.ts if self.now is None else float(self.now)


def check_event(store: RulesStore, p: Pending) -> Event:
    """The record's event body; a record that is not an event is counted in the store's
    rejections and raised as EventBodyError."""
    if isinstance(p.record.body, Event):
        return p.record.body
    exc = EventBodyError(f"record {p.alert_id} is a {str(p.record.kind)!r}, not an event: only events are decided")
    store.reject(f"rules:{p.alert_id}", str(exc), 0)
    logger.warning("rules.event_rejected", extra={"device_id": p.device_id, "alert_id": p.alert_id,
                                                  "reason": str(exc)})
    raise exc


def decide_batch(store: RulesStore, policy: NotificationPolicy, pending: list[Pending]) -> list[Decision]:
    """Decide on new event records, inside the caller's write transaction: the history they need
    is preloaded with a few queries, every event is decided against it in order, and the alerts
    and incident changes are written in one go. The records must be newly stored (so none has a
    decision yet): that is how the aggregator calls it."""
    if not pending:
        return []
    repo = store.alerts
    events = [check_event(store, p) for p in pending]
    history = repo.preload(policy, [(p.device_id, p.record.individual_id, ev.onset, p.t, p.record.ts)
                                    for p, ev in zip(pending, events, strict=True)],
                           sorted({(p.device_id, p.incarnation) for p in pending}))
    out = [decide(history, policy, p.device_id, p.record, ev, p.t, p.incarnation)[0]
           for p, ev in zip(pending, events, strict=True)]
    repo.save(history)
    for d in out:
        logger.info("rules.decided", extra={"device_id": d.device_id, "individual_id": d.individual_id,
                                             "alert_id": d.alert_id, "action": d.action,
                                             "rule": d.rule, "incident_id": d.incident_id})
    return out


def handle_event(store: RulesStore, policy: NotificationPolicy, device_id: str, record: Record,
                 now: float | None = None, incarnation: str = "") -> Decision:
    """Decide on one event record, store the decision (idempotent by the record's identity,
    device id + incarnation + seq), return it.

    Raises EventBodyError (counted in the store's rejections) for a body the rules cannot read,
    and RulesError for a record that is not an event.
    """
    p = Pending(device_id, record, incarnation, now)
    done = get_decision(store, p.alert_id)
    if done is not None:
        return done
    check_event(store, p)
    repo = store.alerts
    with repo.transaction():
        # PostgreSQL: lock first, then look again (a decision committed while this waited is seen)
        repo.lock_keys([record.individual_id])
        decision = get_decision(store, p.alert_id)  # another aggregator may have decided meanwhile
        if decision is not None:
            return decision
        return decide_batch(store, policy, [p])[0]


def collect_more_command(policy: NotificationPolicy, decision: Decision,
                         metrics: list[str] | None = None) -> tuple[str, str, dict[str, Any]]:
    """The downlink for a collect_more decision: (device_id, "collect_more", args) to sign and send.

    args: individual_id, alert_id, minutes (what the device agent reads), duration_s, raw_windows,
    sample_rate_factor and, when given, metrics."""
    s = policy.settings
    args: dict[str, Any] = {"individual_id": decision.individual_id, "alert_id": decision.alert_id,
                            "minutes": s.collect_duration_s / 60.0,
                            "duration_s": s.collect_duration_s, "raw_windows": True,
                            "sample_rate_factor": s.collect_sample_rate_factor}
    if metrics:
        args["metrics"] = list(metrics)
    return decision.device_id, "collect_more", args


def due_renotifications(store: RulesStore, policy: NotificationPolicy,
                        now: float | None = None) -> list[Decision]:
    """Notifications now due: deferred incidents whose quiet hours ended, and reminders for
    unanswered serious incidents every ``renotify_after_s`` (at most
    ``max_notifications_per_incident`` in all). Each returned decision is recorded as sent."""
    t = time.time() if now is None else float(now)
    with store.alerts.transaction():  # two aggregators must not both send the same reminder
        out = _due(store, policy, t)
    for d in out:
        logger.info("rules.renotify", extra={"individual_id": d.individual_id, "alert_id": d.alert_id,
                                             "incident_id": d.incident_id, "rule": d.rule})
    return out


def _due(store: RulesStore, policy: NotificationPolicy, t: float) -> list[Decision]:
    s = policy.settings
    repo = store.alerts
    close_idle_incidents(store, policy, t)
    out: list[Decision] = []
    for inc in repo.unanswered_incidents():
        prefs = local_prefs(store, policy, inc["individual_id"], t)
        if prefs.silenced:
            continue
        quiet = in_quiet_hours(prefs, t)
        count = inc["notify_count"] or 0
        if count == 0:
            if quiet:
                continue
            rule, reason = "deferred-delivery", "held during quiet hours; delivering now they ended"
        else:
            if (inc["severity"] not in s.renotify_severities
                    or count >= s.max_notifications_per_incident
                    or inc["last_notified_at"] is None
                    or t - inc["last_notified_at"] < s.renotify_after_s
                    or (quiet and inc["severity"] not in s.quiet_hours_bypass)):
                continue
            rule = "renotify"
            reason = (f"unanswered {inc['severity']} incident: reminder {count} of "
                      f"{s.max_notifications_per_incident - 1}")
        a = repo.alert(inc["last_alert_id"])
        if a is None:
            continue
        repo.update_incident(inc["incident_id"], {"notify_count": count + 1, "last_notified_at": t})
        if count == 0:
            repo.notify_deferred(inc["incident_id"], t)
        out.append(Decision(a["alert_id"], "notify", reason, rule, inc["incident_id"],
                            a["individual_id"], a["device_id"], a["seq"], a["ts"], a.get("incarnation") or ""))
    return out


def alert_event_body(store: RulesStore, alert_id: str) -> dict[str, Any]:
    """The stored event body behind an alert (for notifiers); {} if the record is gone."""
    return store.alerts.event_body(alert_id)


__all__ = ["Decision", "EventBodyError", "NotificationPolicy", "RulesError", "alert_event_body",
           "alert_id_for", "attach_to_incident", "collect_more_command", "due_renotifications", "get_decision",
           "handle_event", "set_individual_prefs"]
