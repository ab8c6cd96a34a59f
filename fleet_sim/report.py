"""Measure a simulation run against its ground truth and format the table, checks and plot.

Ground truth (``fleet_sim.fleet``): a *notified* alert (``alerts.notified_at`` set, now or
after quiet hours) is a true alert when its ``ts`` falls in one of the individual's alert
conditions (illness, injury, heat; up to 12 h after it ended), else a false alert. Recall: the
share of conditions starting in a phase with a notified alert inside them; detection delay:
first such alert minus the condition's onset. Alerts per individual-week count every notified
alert of the phase over (individuals x weeks of the phase).

``invariants`` checks what must hold regardless of tuning: every event stored exactly once;
each retraining request's condition recomputed independently from the store; worse candidates
blocked by the release check or stopped before any device outside the canary cohort promoted
them; rollout device states consistent with their rollout's state.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from cloud.quality.report import format_quality_table, quality_by_model_version
from cloud.retrain import evaluations, list_requests
from fleet_sim.fleet import GRACE_S
from fleet_sim.loop import DAY, SimResult

logger = logging.getLogger(__name__)
WEEK = 7 * DAY
HOUR = 3600.0


def trial_intervals(res: SimResult) -> dict[str, list[tuple[float, float]]]:
    """device id -> intervals in which it ran a candidate that was not (yet) the fleet release:
    from its promote reply to its rollback reply, the rollout's completion, or the end."""
    be = res.store.backend
    end = res.start_ts + res.cfg.days * DAY
    out: dict[str, list[tuple[float, float]]] = {}
    for (rid,) in be.execute("SELECT id FROM rollouts").fetchall():
        done = be.execute("SELECT MIN(ts) FROM rollout_events WHERE rollout_id = ? AND kind = 'transition' "
                          "AND to_state = 'completed'", [rid]).fetchone()[0]
        start: dict[str, float] = {}
        for dev, to, ts in be.execute("SELECT device_id, to_state, ts FROM rollout_events WHERE rollout_id = ? "
                                      "AND kind = 'reply' ORDER BY id", [rid]).fetchall():
            if to == "promoted":
                start[dev] = ts
            elif to == "rolled_back" and dev in start:
                out.setdefault(dev, []).append((start.pop(dev), ts))
        for dev, ts in start.items():
            out.setdefault(dev, []).append((ts, done if done is not None else end))
    return out


def phase_metrics(res: SimResult, exclude_trials: bool = False) -> list[dict[str, Any]]:
    """Per phase: alerts/ind-week, false alerts/ind-week, precision, recall, detection delay.
    ``exclude_trials``: leave out device-time spent on a candidate release (canary trials)."""
    t0, split, end = res.start_ts, res.start_ts + res.cfg.split_day * DAY, res.start_ts + res.cfg.days * DAY
    by_ind = {s.individual_id: s for s in res.fleet}
    dev_of = {s.individual_id: s.device_id for s in res.fleet}
    trials = trial_intervals(res) if exclude_trials else {}

    def in_trial(ind: str, ts: float) -> bool:
        return any(a <= ts < b for a, b in trials.get(dev_of.get(ind, ""), []))

    alerts = res.store.backend.query(
        "SELECT alert_id, individual_id, ts, start_ts, action, rule, notified_at, state, model_version "
        "FROM alerts ORDER BY ts")
    alerts = [a for a in alerts if not in_trial(a["individual_id"], a["ts"])]
    n = len(res.fleet)
    out = []
    for name, lo, hi in (("phase 1", t0, split), ("phase 2", split, end)):
        trial_s = sum(max(0.0, min(b, hi) - max(a, lo)) for iv in trials.values() for a, b in iv)
        weeks = (hi - lo) / WEEK - trial_s / WEEK / n
        mine = [a for a in alerts if lo <= a["ts"] < hi]
        notified = [a for a in mine if a["notified_at"] is not None]
        true = [a for a in notified if by_ind[a["individual_id"]].condition_at(a["ts"] - t0)]
        false = [a for a in notified if a not in true]
        quirky_false = [a for a in false if by_ind[a["individual_id"]].quirk_at(a["ts"] - t0)]
        conds = [(s, c) for s in res.fleet for c in s.alert_conditions() if lo <= t0 + c.start < hi
                 and not in_trial(s.individual_id, t0 + c.start)]
        detected, delays, seen_any = 0, [], 0
        per_kind: dict[str, list[int]] = {}
        for s, c in conds:
            hits = [a["ts"] for a in alerts if a["individual_id"] == s.individual_id and a["notified_at"] is not None
                    and t0 + c.start <= a["ts"] <= t0 + c.end + GRACE_S]
            per_kind.setdefault(c.kind, [0, 0])[1] += 1
            if any(a["individual_id"] == s.individual_id and t0 + c.start <= a["ts"] <= t0 + c.end + GRACE_S
                   for a in alerts):
                seen_any += 1
            if hits:
                detected += 1
                per_kind[c.kind][0] += 1
                delays.append(min(hits) - (t0 + c.start))
        decided = Counter(a["action"] for a in mine)
        rules = Counter(a["rule"] for a in mine)
        out.append({
            "phase": name, "days": (hi - lo) / DAY, "events": len(mine), "notified": len(notified),
            "true": len(true), "false": len(false), "false_quirk": len(quirky_false),
            "alerts_per_ind_week": len(notified) / (n * weeks) if weeks else 0.0,
            "false_per_ind_week": len(false) / (n * weeks) if weeks else 0.0,
            "precision": len(true) / len(notified) if notified else None,
            "conditions": len(conds), "detected": detected,
            "recall": detected / len(conds) if conds else None, "device_detected": seen_any,
            "delay_median_h": statistics.median(delays) / HOUR if delays else None,
            "per_kind": per_kind, "decided": dict(decided), "suppressed_personalised": rules.get("personalised", 0),
        })
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _f(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def invariants(res: SimResult) -> dict[str, tuple[bool, str]]:
    """Named checks -> (holds, detail)."""
    be = res.store.backend
    out: dict[str, tuple[bool, str]] = {}
    # 1. every record the agents appended is stored exactly once (seqs 1..n per device: one
    # incarnation each, nobody resets a device here)
    bad = []
    for dev, n in res.appended.items():
        seqs = [r[0] for r in be.execute("SELECT seq FROM records WHERE device_id = ? ORDER BY seq", [dev]).fetchall()]
        if seqs != list(range(1, n + 1)):
            bad.append(f"{dev}: {len(seqs)} stored vs {n} appended")
    dup = be.execute("SELECT COUNT(*) FROM (SELECT device_id, seq FROM records GROUP BY device_id, seq "
                     "HAVING COUNT(*) > 1) AS d").fetchone()[0]
    ev_dec = be.execute("SELECT COUNT(*) FROM records r LEFT JOIN alerts a ON a.device_id = r.device_id "
                        "AND a.incarnation = r.incarnation AND a.seq = r.seq "
                        "WHERE r.kind = 'event' AND a.alert_id IS NULL").fetchone()[0]
    pending = sum(r.get("pending", 0) for r in res.device_reports.values())
    out["every record stored exactly once"] = (
        not bad and dup == 0 and pending == 0,
        f"{sum(res.appended.values())} appended, {be.execute('SELECT COUNT(*) FROM records').fetchone()[0]} stored, "
        f"{dup} duplicates, {pending} left in outboxes" + (f"; {bad[:3]}" if bad else ""))
    out["every event decided once"] = (ev_dec == 0, f"{ev_dec} stored events without a decision")
    # 2. retraining requests: recompute each condition from the store
    wrong = []
    reqs = list_requests(res.store)
    for r in reqs:
        ok, why = _recheck_request(res, r)
        if not ok:
            wrong.append(f"request {r.id} ({r.rule}): {why}")
    out["no retraining request without its condition"] = (
        not wrong, f"{len(reqs)} requests re-checked" + (f"; {wrong[:3]}" if wrong else ""))
    # 3. worse candidates never promoted outside the canary cohort
    rows = res.pipeline.rollout_rows()
    leak = []
    for row in rows:
        if not row["kind"].startswith("worse"):
            continue
        if row["check"] is False:
            continue
        prom = row.get("ever_promoted") or {}
        if prom.get("shadow", 0) or prom.get("fleet", 0) or row.get("state") in ("completed", "fleet"):
            leak.append(f"{row['kind']} v{row['version']}: state {row.get('state')}, promoted {prom}")
    out["worse candidates blocked or stopped at canary"] = (
        not leak, f"{sum(1 for r in rows if r['kind'].startswith('worse'))} worse candidates" +
        (f"; LEAKED: {leak}" if leak else ""))
    # 4. rollout states consistent
    incons = []
    for ro in be.query("SELECT id, state FROM rollouts"):
        states = Counter(r[0] for r in be.execute("SELECT state FROM rollout_devices WHERE rollout_id = ?",
                                                  [ro["id"]]).fetchall())
        outstanding = be.execute("SELECT COUNT(*) FROM rollout_devices WHERE rollout_id = ? AND outstanding IS NOT NULL",
                                 [ro["id"]]).fetchone()[0]
        if ro["state"] == "completed" and (set(states) - {"promoted", "failed"} or outstanding):
            incons.append(f"rollout {ro['id']} completed with devices {dict(states)}")
        if ro["state"] == "rolled_back" and (states.get("promoted") or states.get("installed_shadow") or outstanding):
            incons.append(f"rollout {ro['id']} rolled back with devices {dict(states)}")
    fleet_rel = be.execute("SELECT COUNT(*) FROM releases WHERE name = 'collar' AND status = 'fleet'").fetchone()[0]
    if fleet_rel != 1:
        incons.append(f"{fleet_rel} releases with status fleet")
    # what the devices run at the end matches the fleet release (or an active rollout's stage)
    active_ro = be.execute("SELECT COUNT(*) FROM rollouts WHERE state IN ('shadow','canary','fleet','halted')").fetchone()[0]
    fleet_v = be.execute("SELECT version FROM releases WHERE name = 'collar' AND status = 'fleet'").fetchone()
    if not active_ro and fleet_v is not None:
        off = [d for d, r in res.device_reports.items() if str(r.get("active_version")) != str(fleet_v[0])]
        if off:
            incons.append(f"{len(off)} devices do not run fleet release v{fleet_v[0]}: {off[:3]}")
    out["rollout states consistent"] = (not incons, "; ".join(incons) or
                                        f"{be.execute('SELECT COUNT(*) FROM rollouts').fetchone()[0]} rollouts")
    return out


def _recheck_request(res: SimResult, r: Any) -> tuple[bool, str]:
    """Recompute a request's condition with plain SQL over alerts/feedback (not the rule code)."""
    be = res.store.backend
    rule = next((x for x in load_rules(res) if x.name == r.rule), None)
    if rule is None:
        return False, "rule unknown"
    sha = be.execute("SELECT sha256 FROM releases WHERE name = ? AND version = ?", [rule.model_name, r.model_version]).fetchone()
    aliases = {r.model_version} | ({sha[0], sha[0][:12]} if sha and sha[0] else set())
    now = r.created

    def labelled(since: float | None) -> list[tuple[str, bool, str, float]]:
        rows = be.execute(
            "SELECT a.alert_id, a.notified_at IS NOT NULL OR a.action = 'notify', f.action, f.label, f.ts, a.model_version, a.ts "
            "FROM feedback f JOIN alerts a ON a.alert_id = f.alert_id WHERE f.ts <= ? AND f.action IN "
            "('confirm','dismiss','normal_for_her','label') ORDER BY f.ts, f.id", [now]).fetchall()
        latest: dict[str, tuple[bool, str, str, float, str, float]] = {}
        for aid, notified, action, label, fts, mv, ats in rows:
            latest[aid] = (bool(notified), action, label or "", fts, mv, ats)
        out = []
        for aid, (notified, action, label, fts, mv, ats) in latest.items():
            if mv not in aliases or ats > now or (since is not None and ats < since):
                continue
            if action == "confirm":
                outcome = "tp" if notified else "miss"
            elif action in ("dismiss", "normal_for_her") or label.lower() in ("false_alarm", "false_positive", "normal"):
                outcome = "fp" if notified else ""
            elif label.lower() in ("miss", "missed", "missed_event", "missed_alert"):
                outcome = "miss"
            else:
                outcome = ""
            out.append((aid, notified, outcome, fts))
        return out

    if r.kind == "precision":
        items = [x for x in labelled(now - rule.window_days * DAY) if x[2] in ("tp", "fp")]
        tp = sum(1 for x in items if x[2] == "tp")
        n = len(items)
        ok = n >= rule.min_labelled and tp / n < rule.min_precision
        return ok, f"recomputed precision {tp}/{n}"
    if r.kind == "new_cases":
        prev = be.execute("SELECT MAX(created) FROM retrain_requests WHERE rule = ? AND model_version = ? AND id < ?",
                          [r.rule, r.model_version, r.id]).fetchone()[0]
        kinds = {"miss": "miss", "fp": "false_alarm"}
        items = [x for x in labelled(None) if kinds.get(x[2]) in rule.case_kinds and (prev is None or x[3] > prev)]
        orphans = be.execute("SELECT COUNT(*) FROM feedback WHERE alert_id = '' AND action = 'label' AND ts <= ? "
                             "AND lower(label) IN ('miss','missed','missed_event','missed_alert') AND model_version IN "
                             f"({','.join('?' * len(aliases))})" + (" AND ts > ?" if prev is not None else ""),
                             [now, *aliases, *([prev] if prev is not None else [])]).fetchone()[0]
        n = len(items) + (orphans if "miss" in rule.case_kinds else 0)
        return n >= rule.count, f"recomputed {n} new cases (threshold {rule.count})"
    if r.kind == "drift":
        per = (r.measured or {}).get("metrics", {})
        flagged = [m for m, v in per.items() if v.get("tested") and (
            (v.get("psi") or 0) >= rule.psi_threshold or (v.get("ks_p") if v.get("ks_p") is not None else 1) < rule.ks_alpha)]
        return bool(flagged), f"metrics over threshold in the recorded statistics: {flagged}"
    return False, f"unknown kind {r.kind}"


def load_rules(res: SimResult) -> list[Any]:
    return list(res.pipeline.retrain.rules)


def format_report(res: SimResult, phases: list[dict[str, Any]], inv: dict[str, tuple[bool, str]],
                  phases_fleet: list[dict[str, Any]] | None = None) -> str:
    cfg = res.cfg
    L: list[str] = []
    L.append(f"edgeloop feedback loop: {len(res.fleet)} individuals x {cfg.days:g} days (seed {cfg.seed}), "
             f"{res.windows:,} minute windows through the real agent, {res.elapsed_s / 60:.1f} min wall")
    quirks = Counter(s.quirk or "none" for s in res.fleet)
    L.append(f"fleet: quirks {dict(quirks)}; owners: {cfg.owners.p_wrong:.0%} wrong answers, "
             f"{cfg.owners.p_ignore:.0%} ignored, {cfg.owners.p_open_only:.0%} opened only")
    L.append(f"phase 1 = days 0-{cfg.split_day:g} without personalisation (no 'personalised' rule, config "
             f"commands held); phase 2 = days {cfg.split_day:g}-{cfg.days:g} "
             + ("with it" if getattr(cfg, "personalise", True) else "STILL WITHOUT it (control run)"))
    L.append("")
    head = f"{'':<10}{'alerts/ind-wk':>14}{'false/ind-wk':>13}{'precision':>10}{'recall':>12}{'delay(med)':>11}" \
           f"{'notified':>9}{'true':>6}{'false':>6}{'quirk-FP':>9}{'suppr.pers':>11}"
    L.append(head)
    L.append("-" * len(head))
    rows = [(p, p["phase"]) for p in phases] + [(p, p["phase"] + "*") for p in phases_fleet or []]
    for p, label in rows:
        rec = f"{_pct(p['recall'])} ({p['detected']}/{p['conditions']})"
        L.append(f"{label:<10}{p['alerts_per_ind_week']:>14.3f}{p['false_per_ind_week']:>13.3f}"
                 f"{_pct(p['precision']):>10}{rec:>12}{_f(p['delay_median_h'], '.1f') + ' h':>11}"
                 f"{p['notified']:>9}{p['true']:>6}{p['false']:>6}{p['false_quirk']:>9}{p['suppressed_personalised']:>11}")
    if phases_fleet:
        L.append("  * = without device-time on candidate releases (canary trials; weeks and conditions excluded too)")
    for p in phases:
        kinds = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(p["per_kind"].items()))
        L.append(f"  {p['phase']}: notified by kind: {kinds or '-'}; conditions with any device event "
                 f"(any decision) {p['device_detected']}/{p['conditions']}; decisions {p['decided']}")
    p1, p2 = phases
    L.append("")
    L.append("targets:")
    cut = None if not p1["false_per_ind_week"] else 1 - p2["false_per_ind_week"] / p1["false_per_ind_week"]
    L.append("  (phase 1 -> phase 2 mixes personalisation with other conditions and releases; the "
             "control comparison at the end is the measure)")
    L.append(f"  false alerts per individual-week, phase 1 -> 2: {_pct(cut)} cut "
             f"({p1['false_per_ind_week']:.3f} -> {p2['false_per_ind_week']:.3f})")
    if p1["recall"] is not None and p2["recall"] is not None:
        L.append(f"  recall, phase 1 -> 2: {_pct(p1['recall'])} -> {_pct(p2['recall'])}")
    for name, (ok, detail) in inv.items():
        L.append(f"  {name}: {'MET' if ok else 'MISSED'} ({detail})")
    gaps = personalisation_gaps(res)
    if gaps:
        L.append(f"  phase-2 false alerts personalisation did not stop: {dict(gaps)}")
    L.append("")
    L.append("owner feedback as the cloud measures it (cloud.quality, per model version):")
    for p_name, lo, hi in (("phase 1", 0, cfg.split_day), ("phase 2", cfg.split_day, cfg.days)):
        qrows = quality_by_model_version(res.store, res.start_ts + lo * DAY, res.start_ts + hi * DAY)
        L.append(f"  {p_name}:")
        L += ["    " + x for x in format_quality_table(qrows).splitlines()]
    L.append("")
    L.append("retraining (cloud.retrain rules evaluated at every simulated midnight):")
    ev = Counter((e["rule"], e["outcome"]) for e in evaluations(res.store))
    for rule in sorted({k[0] for k in ev}):
        L.append(f"  {rule}: " + ", ".join(f"{o} {n}" for (r, o), n in sorted(ev.items()) if r == rule))
    for r in list_requests(res.store):
        L.append(f"  day {(r.created - res.start_ts) / DAY:5.1f}  request {r.id}  v{r.model_version}  {r.reason}")
    L.append("")
    L.append("candidates (release check = cloud.regression.check_release against the fleet's release):")
    for row in res.pipeline.rollout_rows():
        verdict = {True: "PASSED", False: "BLOCKED", None: "-"}[row["check"]]
        L.append(f"  v{row['version']} {row['kind']:<20} check {verdict}: {row['check_summary']}  [{row['note']}]")
        for reason in row["reasons"][:3]:
            L.append(f"      - {reason[:160]}")
        if row.get("rollout_id") is not None:
            path = " -> ".join(["shadow"] + [t["to_state"] for t in row["transitions"] if t["from_state"]])
            L.append(f"      rollout {row['rollout_id']}: {path}; final {row['state']}; promoted by cohort "
                     f"{row['ever_promoted']}; shadow-installed {row['ever_installed']}")
            halts = [t for t in row["transitions"] if t["to_state"] == "halted"]
            for t in halts:
                L.append(f"      halted day {(t['ts'] - res.start_ts) / DAY:.1f}: {t['reason'][:200]}")
        elif row["check"]:
            L.append("      not started (sim ended or another rollout was active)")
    L.append("")
    L.append(f"cloud counters: {json.dumps({k: v for k, v in sorted(res.counts.items())})}")
    L.append(f"commands: {dict(res.commands)}; device replies to config commands: {dict(res.config_replies)}")
    L.append(f"owners: {dict(res.owners.counts)}")
    return "\n".join(L)


def personalisation_gaps(res: SimResult) -> Counter[str]:
    """Why phase-2 false alerts were not caught by personalisation: no personalisation row for
    the individual yet, a metric of the event without a row, or a deviation beyond the accepted
    threshold (rows as of the alert's time)."""
    be = res.store.backend
    t0, split = res.start_ts, res.start_ts + res.cfg.split_day * DAY
    by_ind = {s.individual_id: s for s in res.fleet}
    out: Counter[str] = Counter()
    for ind, ts, metrics, base, obs in be.execute(
            "SELECT individual_id, ts, metrics, baseline, observed FROM alerts WHERE notified_at IS NOT NULL "
            "AND ts >= ?", [split]).fetchall():
        if by_ind[ind].condition_at(ts - t0):
            continue
        rows = {r[0]: r[1] for r in be.execute(
            "SELECT metric, MAX(threshold) FROM personalisation WHERE individual_id = ? AND ts < ? GROUP BY metric",
            [ind, ts]).fetchall()}
        m, b, o = json.loads(metrics or "[]"), json.loads(base or "{}"), json.loads(obs or "{}")
        if not rows:
            out["no personalisation for the individual yet"] += 1
        elif any(k not in rows for k in m):
            out["a metric of the event has no personalisation"] += 1
        elif any(k in b and k in o and rows[k] is not None and abs(o[k] - b[k]) > rows[k] for k in m):
            out["deviation beyond the accepted threshold"] += 1
        else:
            out["within the accepted range (device-side config changed the event)"] += 1
    return out


def lost_conditions(res: SimResult, control: SimResult) -> list[str]:
    """Phase-2 conditions notified in the control run but not in this one, with what happened here."""
    t0 = res.start_ts
    split = res.cfg.split_day * DAY
    out = []
    q = "SELECT rule FROM alerts WHERE individual_id = ? AND ts >= ? AND ts <= ?"
    for s in res.fleet:
        for c in s.alert_conditions():
            if c.start < split:
                continue
            lo, hi = t0 + c.start, t0 + c.end + GRACE_S

            def notified(r: SimResult, ind: str = s.individual_id, lo: float = lo, hi: float = hi) -> bool:
                return r.store.backend.execute(q + " AND notified_at IS NOT NULL LIMIT 1", [ind, lo, hi]).fetchone() is not None

            if notified(control) and not notified(res):
                rules = [r[0] for r in res.store.backend.execute(q, [s.individual_id, lo, hi]).fetchall()]
                out.append(f"{s.individual_id} ({s.quirk or 'no quirk'}) {c.kind} +{c.magnitude:.0f}: "
                           + (f"decided {rules}" if rules else "no device event"))
    return out


def compare_with_control(phases: list[dict[str, Any]], control: list[dict[str, Any]],
                         lost: list[str] | None = None) -> str:
    """Phase 2 of this run against phase 2 of a control run (same fleet and seed, personalisation
    never switched on): the personalisation effect without the change of time and release."""
    p, c = phases[1], control[1]
    L = ["personalisation against a control run (same fleet, seed and owners; personalisation never on):",
         f"{'phase 2':<22}{'alerts/ind-wk':>14}{'false/ind-wk':>13}{'precision':>10}{'recall':>12}{'delay(med)':>11}"]
    for name, x in (("control (off)", c), ("this run (on)", p)):
        rec = f"{_pct(x['recall'])} ({x['detected']}/{x['conditions']})"
        L.append(f"{name:<22}{x['alerts_per_ind_week']:>14.3f}{x['false_per_ind_week']:>13.3f}"
                 f"{_pct(x['precision']):>10}{rec:>12}{_f(x['delay_median_h'], '.1f') + ' h':>11}")
    cut = None if not c["false_per_ind_week"] else 1 - p["false_per_ind_week"] / c["false_per_ind_week"]
    L.append(f"  false alerts per individual-week cut by >= 50% vs control: {_pct(cut)} "
             f"{'MET' if cut is not None and cut >= 0.5 else 'MISSED'}")
    if p["recall"] is not None and c["recall"] is not None:
        L.append(f"  recall within 5 points of control: {_pct(c['recall'])} -> {_pct(p['recall'])} "
                 f"{'MET' if c['recall'] - p['recall'] <= 0.05 else 'MISSED'}")
    if lost:
        L.append(f"  conditions notified in the control but not with personalisation ({len(lost)}):")
        L += [f"    {x}" for x in lost]
    return "\n".join(L)


def plot(phases: list[dict[str, Any]], path: Path, personalised: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [p["phase"] for p in phases]
    x = range(len(names))
    true_rate = [p["alerts_per_ind_week"] - p["false_per_ind_week"] for p in phases]
    false_rate = [p["false_per_ind_week"] for p in phases]
    a1.bar(x, true_rate, color="tab:green", label="true")
    a1.bar(x, false_rate, bottom=true_rate, color="tab:red", label="false")
    a1.set_xticks(list(x), names)
    a1.set_ylabel("alerts per individual-week")
    a1.legend()
    a1.set_title("alerts (ground truth)")
    prec = [100 * (p["precision"] or 0) for p in phases]
    rec = [100 * (p["recall"] or 0) for p in phases]
    w = 0.38
    a2.bar([i - w / 2 for i in x], prec, w, label="precision", color="tab:blue")
    a2.bar([i + w / 2 for i in x], rec, w, label="recall", color="tab:orange")
    a2.set_xticks(list(x), names)
    a2.set_ylim(0, 100)
    a2.set_ylabel("%")
    a2.legend()
    a2.set_title("precision and recall")
    fig.suptitle("phase 1: no personalisation; phase 2: personalisation " + ("on" if personalised else "still off"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
