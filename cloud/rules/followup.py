"""After a collect_more: decide again on the extra data the device uploaded (``collect_followup``).

A ``collect_more`` decision asks the device for raw minute windows (``device.agent``: records of
kind ``raw`` with the minute's metric values). Once the collection has run (``collect_duration_s``
from the first raw window after the event, plus ``collect_grace_s`` for the last ones to arrive;
or ``collect_max_wait_s`` after the decision with none), :func:`collected_followups` judges each
such alert on those windows:

* per metric of the event, the median of the extra data against the event's baseline: the metric
  *still deviates* when that keeps at least ``collect_confirm_fraction`` of the event's deviation,
  in its direction (a metric needs ``collect_min_points`` values to be judged);
* one metric still deviating: **notify** (rule ``collected-confirms``), through an incident as a
  first decision would, deferred in quiet hours, grouped (not sent again) into an incident the
  owner was already told about, suppressed when the individual is silenced;
* every judged metric back: **held** (rule ``collected-resolved``); no usable data: **held**
  (rule ``collected-no-data``).

The alert row keeps one decision: its action, rule and reason are replaced, the reason naming
the earlier collect_more decision. Pure judgement (:func:`judge`) is separate from the store,
which the rest reaches through ``store.alerts`` (``cloud.rules.history.AlertStore``).

Off by default, because measured: in the 100 x 60 feedback-loop simulation (seed 7,
`scripts/sim_feedback_loop --rules` with it on) it added 43 notifications for one more caught
condition (recall 74 % -> 76 %; phase-2 false alerts 0.149 -> 0.238 per individual-week). The
collar's ``activity`` (a trailing 24 h mean) cannot change within an hour, and heart-rate quirk
episodes last 5-10 hours, so an hour of extra data tells them from nothing. It needs a longer
collection or a raw signal with more to say.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloud.rules.history import AlertStore, RulesStore
from cloud.rules.notify import (
    Decision,
    NotificationPolicy,
    alert_event_body,
    attach_to_incident,
    close_idle_incidents,
    in_quiet_hours,
    local_prefs,
    open_incident,
)

logger = logging.getLogger(__name__)
MAX_RAW = 2000  # raw windows read per alert (a day of minutes is 1440)


@dataclass(frozen=True)
class Verdict:
    """The extra data's answer for one alert."""

    outcome: str  # "still" | "resolved" | "no_data"
    detail: str  # e.g. "skin_temp median 39.1 vs baseline 38.4 (event 39.2)"


def judge(event: Mapping[str, Any], names: Sequence[str], rows: Sequence[Sequence[float | None]],
          fraction: float = 0.5, min_points: int = 10) -> Verdict:
    """Does the extra data (``rows`` of values in ``names`` order) still show the event's deviation?"""
    metrics = list(event.get("metrics") or [])
    dirs, base, obs = (list(event.get(k) or []) for k in ("directions", "baseline", "observed"))
    still: list[str] = []
    back: list[str] = []
    unjudged: list[str] = []
    for i, m in enumerate(metrics):
        j = names.index(m) if m in names else -1
        b = base[i] if i < len(base) else None
        o = obs[i] if i < len(obs) else None
        vals = [float(v) for r in rows if 0 <= j < len(r) and (v := r[j]) is not None and math.isfinite(v)]
        if b is None or o is None or len(vals) < min_points or o == b:
            unjudged.append(m)
            continue
        d = int(dirs[i]) if i < len(dirs) and dirs[i] else (1 if o > b else -1)
        med = statistics.median(vals)
        kept = d * (med - b) / abs(o - b)
        text = f"{m} median {med:.4g} vs baseline {b:.4g} (event {o:.4g}, {kept:.0%} of it kept)"
        (still if kept >= fraction else back).append(text)
    if still:
        return Verdict("still", "; ".join(still))
    if back:
        return Verdict("resolved", "; ".join(back))
    return Verdict("no_data", f"no metric of {metrics} has {min_points} values in the extra data")


def _first_raw(repo: AlertStore, alert: Mapping[str, Any]) -> float | None:
    """Time of the first raw window the device uploaded after the event (None: none yet; the
    command reaches the device whenever it next connects)."""
    return repo.first_raw(alert["device_id"], alert["ts"])


def _raw_rows(repo: AlertStore, alert: Mapping[str, Any], first: float | None, duration: float,
              event: Mapping[str, Any]) -> tuple[list[str], list[list[float | None]]]:
    """(metric names, value rows) of the collection: the raw windows from ``first`` for ``duration``."""
    names: list[str] = list((event.get("trace") or {}).get("metrics") or [])
    rows: list[list[float | None]] = []
    if first is None:
        return names, rows
    for text in repo.raw_bodies(alert["device_id"], first, first + duration, MAX_RAW):
        body = json.loads(text)
        if isinstance(body.get("names"), list):
            names = [str(x) for x in body["names"]]
        vals = body.get("metrics")
        if isinstance(vals, list):
            rows.append([v if isinstance(v, int | float) else None for v in vals])
    return names, rows


def collected_followups(store: RulesStore, policy: NotificationPolicy, now: float) -> list[Decision]:
    """Decide again on every alert whose collection has run; returns the new notifications."""
    s = policy.settings
    if not s.collect_followup:
        return []
    wait = s.collect_duration_s + s.collect_grace_s
    out: list[Decision] = []
    repo = store.alerts
    with repo.transaction():
        for a in repo.collecting_due(now - wait):
            first = _first_raw(repo, a)
            if first is None and now < a["decided_at"] + s.collect_max_wait_s:
                continue  # the device has not started uploading yet
            if first is not None and now < first + wait:
                continue  # still collecting
            event = alert_event_body(store, a["alert_id"])  # read only for alerts decided now
            names, rows = _raw_rows(repo, a, first, s.collect_duration_s, event)
            v = judge(event, names, rows, s.collect_confirm_fraction, s.collect_min_points)
            d = _apply(store, policy, a, v, now)
            if d is not None:
                out.append(d)
    return out


def _apply(store: RulesStore, policy: NotificationPolicy, a: Mapping[str, Any], v: Verdict,
           t: float) -> Decision | None:
    before = f"after collect_more ({a['rule']}: {a['reason']})"
    upd: dict[str, Any] = {"decided_at": t}
    notify = False
    if v.outcome != "still":
        rule = "collected-resolved" if v.outcome == "resolved" else "collected-no-data"
        upd.update(action="uncertain", state="held", rule=rule,
                   reason=f"extra data: back to normal: {v.detail}; {before}" if v.outcome == "resolved"
                   else f"extra data: {v.detail}; held; {before}")
    else:
        ind = a["individual_id"]
        prefs = local_prefs(store, policy, ind, t)
        close_idle_incidents(store, policy, t, ind)
        inc = open_incident(store, ind)
        reason = f"extra data confirms: {v.detail}; {before}"
        if prefs.silenced:
            upd.update(action="suppress", state="suppressed", rule="collected-confirms-silenced",
                       reason=f"silenced: {reason}")
        elif inc is not None and (inc["notify_count"] or 0) > 0:
            upd.update(action="suppress", state="suppressed", rule="collected-confirms-grouped",
                       reason=f"grouped into the open incident: {reason}",
                       incident_id=attach_to_incident(store, inc, ind, a["alert_id"], a["severity"], t,
                                                      notify=False))
        else:
            notify = not (in_quiet_hours(prefs, t) and a["severity"] not in policy.settings.quiet_hours_bypass)
            upd.update(action="notify", state="notified" if notify else "deferred", rule="collected-confirms",
                       reason=reason, notified_at=t if notify else None,
                       incident_id=attach_to_incident(store, inc, ind, a["alert_id"], a["severity"], t,
                                                      notify=notify))
    store.alerts.update_alert(a["alert_id"], upd)
    logger.info("rules.followup", extra={"alert_id": a["alert_id"], "outcome": v.outcome, "rule": upd["rule"]})
    if not notify:
        return None
    return Decision(a["alert_id"], "notify", upd["reason"], upd["rule"], upd.get("incident_id"),
                    a["individual_id"], a["device_id"], a["seq"], a["ts"], a.get("incarnation") or "")
