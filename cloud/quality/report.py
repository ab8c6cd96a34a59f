"""Alert quality per model version (and optionally per time window), from decisions and feedback.

For the alerts whose event ``ts`` falls in ``[since, until)`` (feedback counts whenever it came):

- ``alerts``: events decided; ``notified``: of those, sent to an owner (now or after quiet hours)
- ``individuals``: individuals with at least one decided event of that model version
- ``alerts_per_ind_week``: notified / (individuals x weeks in the window); the window is
  ``[since, until)`` when given, else the span of those alerts, at least one day
- ``confirmed`` / ``dismissed`` / ``normal_for_her``: alerts by their latest explicit verdict
- ``precision``: confirmed / (confirmed + dismissed), None without verdicts
- ``ignored_rate``: notified alerts now in state 'ignored' / notified
- ``median_time_to_act_s``: first 'acted' feedback minus notification time, over acted alerts
- ``median_detection_delay_s``: ``ts - start_ts`` over confirmed alerts (how long the device
  needed to raise a case the owner confirmed)

Alerts stored with an impossible time (before the cloud refused them: not 1970..2100) are left
out with a ``quality.alerts_skipped`` warning.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from typing import Any

from cloud.feedback.clock import WALL_SLACK_S, data_clock_offsets
from cloud.store.db import CloudStore
from cloud.store.feedback import FeedbackRepository
from cloud.timestamps import readable

logger = logging.getLogger(__name__)

WEEK = 7 * 86400.0
_VERDICTS = ("confirm", "dismiss", "normal_for_her")


def _median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def quality_by_model_version(store: CloudStore, since: float | None = None, until: float | None = None,
                             *, window_s: float | None = None) -> list[dict[str, Any]]:
    """One row per model version (per window of ``window_s`` seconds when given), sorted by
    window start then model version."""
    if window_s is not None and window_s <= 0:
        raise ValueError(f"window_s must be > 0, found {window_s}")
    repo = FeedbackRepository(store.backend)
    alerts = repo.alerts_between(since, until)
    if skipped := [a["alert_id"] for a in alerts if not readable(a["ts"])]:
        # stored before the cloud refused impossible times: one such row would stretch the window
        logger.warning("quality.alerts_skipped", extra={
            "alerts": len(skipped), "first": skipped[0],
            "reason": "stored with an impossible time (not 1970..2100); the cloud now refuses such records"})
        alerts = [a for a in alerts if readable(a["ts"])]
    if not alerts:
        return []
    ids = {a["alert_id"] for a in alerts}
    # owners act in wall time, alerts carry event time: put the answers on each individual's
    # data clock (0 for live collars; months for alerts replayed from an old trace)
    offsets = data_clock_offsets(store.backend)
    ind_of = {a["alert_id"]: a["individual_id"] for a in alerts}
    verdict: dict[str, tuple[float, str]] = {}
    acted: dict[str, float] = {}
    for aid, action, ts, received in repo.answers():
        if aid not in ids:
            continue
        if received is not None and abs(ts - received) < WALL_SLACK_S:  # a wall-clock answer
            ts -= offsets.get(ind_of[aid], 0.0)
        if action == "acted":
            acted.setdefault(aid, ts)
        else:
            verdict[aid] = (ts, action)  # ordered by ts: the last one wins
    lo = since if since is not None else alerts[0]["ts"]
    hi = until if until is not None else alerts[-1]["ts"]
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        start = lo if window_s is None else lo + ((a["ts"] - lo) // window_s) * window_s
        groups[(start, a["model_version"] or "unknown")].append(a)
    rows = []
    for (start, mv), group in sorted(groups.items()):
        if window_s is None:
            end = hi
        else:
            end = start + window_s if until is None else min(start + window_s, until)
        weeks = max(end - start, 86400.0) / WEEK
        notified = [a for a in group if a["notified_at"] is not None]
        individuals = {a["individual_id"] for a in group}
        v = [verdict[a["alert_id"]][1] for a in group if a["alert_id"] in verdict]
        conf, dism, nfh = v.count("confirm"), v.count("dismiss"), v.count("normal_for_her")
        ignored = sum(1 for a in notified if a["state"] == "ignored")
        act = [acted[a["alert_id"]] - a["notified_at"] for a in notified
               if a["alert_id"] in acted and acted[a["alert_id"]] >= a["notified_at"]]
        delay = [a["ts"] - a["start_ts"] for a in group
                 if verdict.get(a["alert_id"], (0, ""))[1] == "confirm" and readable(a["start_ts"])]
        rows.append({
            "model_version": mv, "window_start": start, "window_end": end,
            "alerts": len(group), "notified": len(notified), "individuals": len(individuals),
            "alerts_per_ind_week": len(notified) / (len(individuals) * weeks),
            "confirmed": conf, "dismissed": dism, "normal_for_her": nfh,
            "precision": conf / (conf + dism) if conf + dism else None,
            "ignored": ignored, "ignored_rate": ignored / len(notified) if notified else None,
            "median_time_to_act_s": _median(act), "median_detection_delay_s": _median(delay),
        })
    return rows


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f}s"
    if s < 2 * 3600:
        return f"{s / 60:.0f}m"
    if s < 2 * 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


_COLS = (("model", "model_version", str), ("from", "window_start", None), ("days", None, None),
         ("alerts", "alerts", str), ("notified", "notified", str), ("ind", "individuals", str),
         ("/ind-wk", "alerts_per_ind_week", lambda x: f"{x:.2f}"),
         ("conf", "confirmed", str), ("dism", "dismissed", str), ("nfh", "normal_for_her", str),
         ("precision", "precision", _pct), ("ignored", "ignored_rate", _pct),
         ("act(med)", "median_time_to_act_s", _dur), ("delay(med)", "median_detection_delay_s", _dur))


def format_quality_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table for the CLI (one line per row, header first)."""
    import datetime as dt

    if not rows:
        return "no alerts in this period"
    table = [[c[0] for c in _COLS]]
    for r in rows:
        line = []
        for title, key, fmt in _COLS:
            if title == "from":
                line.append(dt.datetime.fromtimestamp(r["window_start"], dt.UTC).strftime("%Y-%m-%d %H:%M"))
            elif title == "days":
                line.append(f"{(r['window_end'] - r['window_start']) / 86400:.1f}")
            else:
                line.append(fmt(r[key]))  # type: ignore[misc, index]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLS))]
    out = []
    for row in table:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    return "\n".join(out)
