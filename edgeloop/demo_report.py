"""The demo's report: per individual, what was injected, what was caught and when, what was
rightly ignored, false alerts, records sent vs stored; and a plot of one individual."""

from __future__ import annotations

import calendar
import statistics
import time
from pathlib import Path
from typing import Any

from cloud.rules.notify import alert_id_for
from cloud.store.backend import redact
from cloud.store.db import CloudStore
from cloud.store.read_model import ReadModel
from firmware_sim.scenario import ALERT_CONDITIONS, NO_ALERT_CONDITIONS, Individual

GRACE_S = 24 * 3600.0  # an event up to a day after a condition ends still belongs to it
IGNORE_WINDOW_S = 6 * 3600.0  # a one-off is "rightly ignored" if no event starts within 6 h


def _fmt(ts: float) -> str:
    return time.strftime("%b %d %H:%M", time.gmtime(ts))


def _sleep_minutes(summaries: list[dict[str, Any]]) -> list[int]:
    """Main-sleep minutes per night from collar daily summaries (device/features/rest.py)."""
    rests = [r["body"].get("rest") or {} for r in summaries]
    return [int(r["main_sleep"]["minutes"]) for r in rests if r.get("main_sleep")]


def build_report(store: CloudStore, fleet: list[Individual], start_ts: float, finals: dict[str, Any],
                 sent: list[Any], out: Path, elapsed: float, units: list[Individual] | None = None) -> str:
    everything = store.records("event")
    events = [e for e in everything if e["body"].get("kind") != "health"]  # behaviour; health is listed apart
    decisions = {r["alert_id"]: r for r in ReadModel(store.backend).all_alerts()}
    units = units or []
    pis = f" + {len(units)} perception unit{'s' if len(units) > 1 else ''}" if units else ""
    lines = ["", "=" * 100, f"edgeloop demo report  ({len(fleet)} collars{pis}, wall time {elapsed:.1f} s)", "=" * 100]
    caught = missed = ignored_ok = false_alerts = 0
    n_alert_conditions = n_oneoffs = 0
    for ind in fleet:
        evs = [e for e in events if e["individual_id"] == ind.individual_id]
        # an event inside an alert condition belongs to it, even when a one-off came just before
        used: set[int] = {e["seq"] for c in ind.conditions if c.kind in ALERT_CONDITIONS for e in evs
                          if start_ts + c.start <= e["ts"] <= start_ts + c.end + GRACE_S}
        lines.append(f"\n{ind.individual_id} ({ind.device_id}): resting HR {ind.traits.resting_hr:.0f} bpm, "
                     f"{len(evs)} event(s)")
        nights = _sleep_minutes(store.records("summary", ind.individual_id))
        if nights:
            lines.append(f"  sleep: {statistics.median(nights) / 60:.1f} h a night (median of {len(nights)} "
                         f"nights in its daily summaries; simulated {ind.traits.sleep_hours:.1f} h)")
        for c in ind.conditions:
            c_start, c_end = start_ts + c.start, start_ts + c.end
            if c.kind in ALERT_CONDITIONS:
                n_alert_conditions += 1
                hits = [e for e in evs if c_start <= e["ts"] <= c_end + GRACE_S]
                if hits:
                    caught += 1
                    e = hits[0]
                    d = decisions.get(alert_id_for(e["device_id"], e["seq"], e["incarnation"]), {})
                    lines.append(f"  {c.kind:11} from {_fmt(c_start)} for {c.duration / 3600:4.0f} h: CAUGHT "
                                 f"{(e['ts'] - c_start) / 3600:5.1f} h after onset "
                                 f"({'+'.join(e['body']['metrics'])}, {e['body']['severity']}; cloud: "
                                 f"{d.get('action', '?')} - {d.get('reason', '')[:60]})")
                else:
                    missed += 1
                    lines.append(f"  {c.kind:11} from {_fmt(c_start)} for {c.duration / 3600:4.0f} h: MISSED")
            elif c.kind in NO_ALERT_CONDITIONS:
                n_oneoffs += 1
                hits = [e for e in evs if c_start <= e["ts"] <= c_start + IGNORE_WINDOW_S
                        and e["seq"] not in used]
                if hits:
                    lines.append(f"  {c.kind:11} at {_fmt(c_start)} ({c.duration / 60:.0f} min): WRONGLY ALERTED")
                else:
                    ignored_ok += 1
                    lines.append(f"  {c.kind:11} at {_fmt(c_start)} ({c.duration / 60:.0f} min): rightly ignored")
            else:
                lines.append(f"  {c.kind:11} at {_fmt(c_start)}: sensor fault injected (counted below)")
        for e in everything:
            if e["individual_id"] == ind.individual_id and e["body"].get("kind") == "health":
                d = decisions.get(alert_id_for(e["device_id"], e["seq"], e["incarnation"]), {})
                lines.append(f"  health alert at {_fmt(e['ts'])}: {'+'.join(e['body']['metrics'])} since "
                             f"{_fmt(e['body']['start_ts'])} (cloud: {d.get('action', '?')} - {d.get('rule', '')})")
        for e in evs:
            if e["seq"] not in used:
                false_alerts += 1
                lines.append(f"  FALSE ALERT at {_fmt(e['ts'])}: {'+'.join(e['body']['metrics'])} "
                             f"(score {e['body']['score']:.2f})")
        ing = finals.get(ind.device_id, {}).get("ingest", {})
        faults = {k: v for k, v in ing.items() if v and k in (
            "bytes_rejected", "crc_errors", "resyncs", "hr_stuck", "hr_saturated", "accel_saturated",
            "clock_jump_back", "payload_rejected", "out_of_order")}
        if faults:
            lines.append(f"  rejected input (counted, nothing else lost): {faults}")
        lat = finals.get(ind.device_id, {}).get("latency", {})
        if lat:
            lines.append(f"  per-window processing: p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, "
                         f"budget {lat['budget_ms']} ms, overruns {lat['overruns']}")
    p_caught, p_lines = _perception(units, everything, decisions, start_ts)
    lines += p_lines
    sent_counts = {k: sum(f.get("outbox", {}).get(f"appended.{k}", 0) for f in finals.values())
                   for k in ("event", "summary", "report", "raw")}
    stored = {k: store.count(k) for k in sent_counts}
    pending = sum(f.get("pending", 0) for f in finals.values())
    plot = _plot(store, fleet, start_ts, out)
    lines += [
        "", "-" * 100, "SUMMARY",
        f"  conditions caught: {caught} of {n_alert_conditions} (missed {missed})",
        *([f"  perception conditions caught: {p_caught} of {sum(len(u.conditions) for u in units)}"] if units else []),
        f"  one-off excitement rightly ignored: {ignored_ok} of {n_oneoffs}",
        f"  false alerts: {false_alerts}",
        f"  owner notifications sent by the cloud: {len(sent)}",
        f"  events sent {sent_counts['event']} / stored {stored['event']}; summaries sent "
        f"{sent_counts['summary']} / stored {stored['summary']}; left in device outboxes: {pending}",
        f"  {'OK: every record the agents wrote is stored exactly once' if sent_counts == stored else 'MISMATCH between sent and stored'}",
        f"  plot: {plot}", f"  cloud store: {store.path or redact(store.url.target)}   ground truth: {out / 'ground_truth.json'}",
    ]
    return "\n".join(lines) + "\n"


# what catches each injected perception condition (firmware_sim/perception.py): (event kind, metric prefix)
PERCEPTION_CATCH: dict[str, tuple[tuple[str, str], ...]] = {
    "conf_drift": (("sustained", "confidence"),),
    "novel_class": (("novel", "novel_class:"), ("novel", "class_rate:"), ("sustained", "novel")),
    "frozen": (("health", "frozen"),),
    "moved": (("novel", "scene_change"), ("sustained", "brightness"), ("sustained", "scene_change")),
}


def _perception(units: list[Individual], events: list[dict[str, Any]], decisions: dict[str, Any],
                start_ts: float) -> tuple[int, list[str]]:
    """Per perception unit: each injected condition, caught after how long (and what the cloud
    decided), or missed; and any event outside them."""
    caught, lines = 0, []
    for u in units:
        evs = [e for e in events if e["individual_id"] == u.individual_id]
        lines.append(f"\n{u.individual_id} ({u.device_id}, perception): {len(evs)} event(s)")
        used: set[int] = set()
        for c in u.conditions:
            c_start, c_end = start_ts + c.start, start_ts + c.end
            catch = PERCEPTION_CATCH.get(c.kind, ())
            hits = [e for e in evs if c_start <= e["ts"] <= c_end + GRACE_S
                    and any(e["body"].get("kind") == kind and any(m.startswith(prefix) for m in e["body"]["metrics"])
                            for kind, prefix in catch)]
            if not hits:
                lines.append(f"  {c.kind:11} from {_fmt(c_start)} for {c.duration / 3600:4.1f} h: MISSED")
                continue
            caught += 1
            e = hits[0]
            used.update(h["seq"] for h in hits)
            d = decisions.get(alert_id_for(e["device_id"], e["seq"], e["incarnation"]), {})
            lines.append(f"  {c.kind:11} from {_fmt(c_start)} for {c.duration / 3600:4.1f} h: CAUGHT "
                         f"{(e['ts'] - c_start) / 60:6.0f} min after onset ({'+'.join(e['body']['metrics'])}, "
                         f"{e['body'].get('kind')}; cloud: {d.get('action', '?')} - {d.get('rule', '')})")
        for e in evs:
            if e["seq"] not in used:
                lines.append(f"  OTHER EVENT at {_fmt(e['ts'])}: {'+'.join(e['body']['metrics'])} "
                             f"({e['body'].get('kind')}, score {e['body']['score']:.2f})")
    return caught, lines


def _plot(store: CloudStore, fleet: list[Individual], start_ts: float, out: Path) -> Path:
    """Resting HR of the first individual with an illness: hourly mean, baseline band, alerts, truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ind = next((i for i in fleet if any(c.kind == "illness" for c in i.conditions)), fleet[0])
    ts, mean, base, spread = [], [], [], []
    for s in store.records("summary", ind.individual_id):
        day0 = calendar.timegm(time.strptime(s["body"]["day"], "%Y-%m-%d"))
        h = s["body"].get("hourly", {}).get("resting_hr")
        if not h:
            continue
        for k in range(24):
            ts.append(day0 + k * 3600 + 1800)
            mean.append(np.nan if h["mean"][k] is None else h["mean"][k])
            base.append(np.nan if h["baseline"][k] is None else h["baseline"][k])
            spread.append(np.nan if h["spread"][k] is None else h["spread"][k])
    t = (np.array(ts) - start_ts) / 86400.0
    m, b, sd = np.array(mean), np.array(base), np.array(spread)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for c in ind.conditions:
        color = {"illness": "red", "injury": "orange", "heat": "gold"}.get(c.kind, "grey")
        ax.axvspan(c.start / 86400, max(c.end, c.start + 1800) / 86400, color=color, alpha=0.15,
                   label=f"injected: {c.kind}")
    ax.fill_between(t, b - 2 * sd, b + 2 * sd, color="tab:blue", alpha=0.2, label="baseline +- 2 spread")
    ax.plot(t, b, color="tab:blue", lw=1, label="baseline (this individual, this hour)")
    ax.plot(t, m, ".", color="black", ms=3, label="resting HR, hourly mean")
    for i, e in enumerate(store.records("event", ind.individual_id)):
        ax.axvline((e["ts"] - start_ts) / 86400, color="crimson", ls="--", lw=1.5,
                   label="alert (event stored in cloud)" if i == 0 else None)
    ax.set_xlabel("simulated day")
    ax.set_ylabel("bpm")
    ax.set_title(f"{ind.individual_id}: resting heart rate against its own baseline")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = out / f"{ind.individual_id}_resting_hr.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
