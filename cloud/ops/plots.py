"""Server-side plots for the dashboard (matplotlib's object API: no pyplot state, safe per request),
returned as SVG text to embed in the page. Nothing is fetched by the browser."""

from __future__ import annotations

import calendar
import io
import math
import time
from typing import Any

BAND = 2.0
SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#2ca02c"}
FEEDBACK_MARKS = {"confirm": ("v", "#d62728"), "dismiss": ("x", "#555555"), "normal_for_her": ("o", "#1f77b4"),
                  "label": ("s", "#9467bd"), "ignored": (".", "#aaaaaa"), "opened": ("^", "#17becf"),
                  "acted": ("*", "#2ca02c")}


def _day_start(day: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(day, "%Y-%m-%d")))
    except (TypeError, ValueError):
        return None


def hourly_series(summaries: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """{metric: {"t", "mean", "baseline", "spread"}} from the daily summaries' hourly blocks."""
    out: dict[str, dict[str, list[float]]] = {}
    for s in summaries:
        body = s["body"]
        t0 = _day_start(str(body.get("day", "")))
        if t0 is None:
            continue
        for metric, block in (body.get("hourly") or {}).items():
            series = out.setdefault(metric, {"t": [], "mean": [], "baseline": [], "spread": []})
            means = block.get("mean") or []
            for h, mean in enumerate(means):
                series["t"].append(t0 + h * 3600.0)
                series["mean"].append(_num(mean))
                series["baseline"].append(_num((block.get("baseline") or [None] * 24)[h]))
                series["spread"].append(_num((block.get("spread") or [None] * 24)[h]))
    return out


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def individual_svg(individual_id: str, summaries: list[dict[str, Any]], events: list[dict[str, Any]],
                   alerts: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> str:
    """Each metric's hourly mean with its baseline +- 2 spread band; events shaded over their span
    (colour = severity); owners' feedback marked at the time of the alert it answers."""
    import numpy as np
    from matplotlib import rc_context
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    series = hourly_series(summaries)
    metrics = sorted(series) or ["(no daily summaries yet)"]
    fig = Figure(figsize=(11, 1.7 * len(metrics) + 0.8))
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    alert_ts = {a["alert_id"]: a["ts"] for a in alerts}
    to_date = np.vectorize(lambda t: np.datetime64(int(t), "s"))
    for ax, metric in zip(axes, metrics, strict=True):
        s = series.get(metric)
        if s and s["t"]:
            t = to_date(np.asarray(s["t"]))
            mean, base, spread = (np.asarray(s[k], dtype=float) for k in ("mean", "baseline", "spread"))
            ax.fill_between(t, base - BAND * spread, base + BAND * spread, color="#1f77b4", alpha=0.15, lw=0,
                            label=f"baseline ± {BAND:g} spread")
            ax.plot(t, base, color="#1f77b4", lw=1.0, label="baseline")
            ax.plot(t, mean, color="#333333", lw=0.8, label=f"{metric} (hourly mean)")
        ax.set_ylabel(metric, fontsize=8)
        for ev in events:
            if metric not in (ev.get("metrics") or []) and len(metrics) > 1:
                continue
            start = float(ev.get("start_ts") or ev["ts"])
            end = max(float(ev["ts"]), start + 1800.0)
            ax.axvspan(np.datetime64(int(start), "s"), np.datetime64(int(end), "s"),
                       color=SEVERITY_COLOURS.get(str(ev.get("severity")), "#2ca02c"), alpha=0.25, lw=0)
        if ax.get_legend_handles_labels()[0]:  # a summary without this metric's hours has nothing to name
            ax.legend(loc="upper left", fontsize=7, ncol=3)
    top = axes[0]
    for fb in feedback:
        t = alert_ts.get(fb["alert_id"])
        if t is None:
            continue
        marker, colour = FEEDBACK_MARKS.get(fb["action"], ("d", "#000000"))
        top.plot([np.datetime64(int(t), "s")], [1.0], marker=marker, color=colour, ms=9,
                 transform=top.get_xaxis_transform(), clip_on=False, ls="none")
        top.annotate(fb["action"], (np.datetime64(int(t), "s"), 1.0), xycoords=("data", "axes fraction"),
                     fontsize=7, color=colour, xytext=(4, 2), textcoords="offset points")
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.suptitle(f"{individual_id}: signals, baseline band, events (shaded) and feedback (marks)", fontsize=10)
    fig.tight_layout()
    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, selectable, searchable
        fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prologue: the SVG is inlined in HTML
