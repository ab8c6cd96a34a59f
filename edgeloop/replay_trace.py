"""``edgeloop replay trace FILE --out DIR``: a recorded frame trace through the real agent, offline.

Writes ``events.jsonl`` (the events the agent queued), ``trace.png`` (each metric's signal with
its baseline band, the combined deviation score, events shaded over their span) and prints one
summary line. On a long file a progress line on stderr shows how far it has read.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from device.agent import Agent
from device.config import AgentConfig
from device.errors import SetupError
from device.reader import TraceSource

logger = logging.getLogger(__name__)
BAND = 2.0  # the plotted band: baseline +- BAND x spread
PROGRESS_MIN_BYTES = 4 * 1024 * 1024  # files smaller than this finish before progress matters
PROGRESS_EVERY_S = 2.0  # between progress lines when stderr is not a terminal


@dataclass
class Recorder:
    """The agent's observer: keeps one row per minute window (copies of the engine's buffers)."""

    ts: list[float] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    baseline: list[np.ndarray] = field(default_factory=list)
    spread: list[np.ndarray] = field(default_factory=list)
    score: list[float] = field(default_factory=list)

    def __call__(self, ts: float, vec: list[float], out: Any) -> None:
        self.ts.append(ts)
        self.values.append(np.asarray(vec, dtype=np.float64).copy())
        m = len(vec)
        self.baseline.append(np.array(out.baseline[0], dtype=np.float64) if out.baseline.size else np.full(m, np.nan))
        self.spread.append(np.array(out.spread[0], dtype=np.float64) if out.spread.size else np.full(m, np.nan))
        self.score.append(float(out.combined[0]) if out.combined.size else float("nan"))


def _progress(src: TraceSource, rec: Recorder, stop: threading.Event, stream: TextIO, t0: float) -> None:
    """A progress line: rewritten in place on a terminal, one line every 2 s elsewhere (logs)."""
    tty = stream.isatty()
    while not stop.wait(0.5 if tty else PROGRESS_EVERY_S):
        done = src.f.tell() / max(src.size, 1)
        days = (rec.ts[-1] - rec.ts[0]) / 86400 if len(rec.ts) > 1 else 0.0
        line = (f"replay trace: {100 * done:5.1f}% of {src.size / 1e6:.1f} MB, {days:6.2f} days, "
                f"{time.monotonic() - t0:5.1f} s")
        stream.write(f"\r{line}" if tty else f"{line}\n")
        stream.flush()
    if tty:
        stream.write("\r" + " " * 70 + "\r")
        stream.flush()


def replay_trace(trace: str | Path, out: str | Path, *, progress: bool | None = None,
                 stream: TextIO | None = None) -> dict[str, Any]:
    """Run the trace, write events.jsonl and trace.png into ``out``; return the summary."""
    src = TraceSource(trace)  # a missing trace is an error before anything is written
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SetupError(f"--out {out}: cannot create the folder ({exc.strerror}): pass a writable folder") from None
    stream = stream or sys.stderr
    t0 = time.monotonic()
    agent = Agent(AgentConfig(source=str(trace), state_dir=str(out / "state"), exit_on_eof=True), connect=False)
    rec = Recorder()
    agent.observer = rec
    stop = threading.Event()
    show = progress if progress is not None else (src.size >= PROGRESS_MIN_BYTES and stream.isatty())
    ticker = threading.Thread(target=_progress, args=(src, rec, stop, stream, t0), daemon=True) if show else None
    if ticker is not None:
        ticker.start()
    try:
        report = agent.run(source=src)
    finally:
        stop.set()
        if ticker is not None:
            ticker.join(2)
    events = []
    with open(out / "events.jsonl", "w") as f:
        for row in agent.outbox.due(10**9):
            if row.kind == "event":
                ev = {"seq": row.seq, "individual_id": row.individual_id, **row.body}
                ev.pop("trace", None)  # the engine snapshot for release checks: not for reading
                f.write(json.dumps(ev) + "\n")
                events.append(ev)
    metrics = list(agent.profile.metrics)
    png = out / "trace.png"
    plot_trace(rec, metrics, events, png, title=f"{Path(trace).name}: {agent.individual_id or agent.cfg.device_id}")
    ingest = report["ingest"]
    rejected = sum(int(ingest.get(k, 0)) for k in ("crc_errors", "bad_length", "bad_version", "payload_rejected"))
    summary = {
        "trace": str(trace), "device_id": agent.cfg.device_id, "kind": agent.profile.kind,
        "individual_id": agent.individual_id, "windows": len(rec.ts),
        "days": round((rec.ts[-1] - rec.ts[0]) / 86400, 2) if len(rec.ts) > 1 else 0.0,
        "start": _iso(rec.ts[0]) if rec.ts else None, "end": _iso(rec.ts[-1]) if rec.ts else None,
        "events": len(events), "by_severity": _count(e.get("severity") for e in events),
        "frames": int(ingest.get("frames_ok", 0)), "frames_rejected": rejected,
        "bytes_rejected": int(ingest.get("bytes_rejected", 0)), "latency_p99_ms": report["latency"]["p99_ms"],
        "events_file": str(out / "events.jsonl"), "plot": str(png), "seconds": round(time.monotonic() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def summary_line(s: dict[str, Any]) -> str:
    sev = ", ".join(f"{n} {k}" for k, n in sorted(s["by_severity"].items()))
    return (f"{s['trace']}: {s['kind']} {s['device_id']}, {s['individual_id'] or '?'}, {s['days']:g} days ({s['start']} -> {s['end']}), "
            f"{s['windows']} windows, {s['events']} events{f' ({sev})' if sev else ''}, "
            f"{s['frames']} frames ({s['frames_rejected']} rejected, {s['bytes_rejected']} bytes skipped), "
            f"p99 {s['latency_p99_ms']:.2f} ms/window -> {s['events_file']}, {s['plot']} in {s['seconds']:g} s")


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[str(x)] = out.get(str(x), 0) + 1
    return out


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def plot_trace(rec: Recorder, metrics: list[str], events: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """One panel per metric (signal, baseline +- 2 spread) and the combined score, on one time
    axis in days from the trace's start; events shaded over their span, labelled by severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(metrics)
    fig, axes = plt.subplots(n + 1, 1, figsize=(12, 1.9 * (n + 1) + 0.6), sharex=True, squeeze=False)
    ax_list = [a[0] for a in axes]
    if not rec.ts:
        ax_list[0].text(0.5, 0.5, "no minute windows in this trace", ha="center", transform=ax_list[0].transAxes)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    t0 = rec.ts[0]
    days = (np.asarray(rec.ts) - t0) / 86400.0
    vals, base, spread = np.vstack(rec.values), np.vstack(rec.baseline), np.vstack(rec.spread)
    colours = {"critical": "tab:red", "warning": "tab:orange"}
    for i, name in enumerate(metrics):
        ax = ax_list[i]
        ax.plot(days, vals[:, i], lw=0.5, color="0.35", label=name)
        ax.plot(days, base[:, i], lw=1.0, color="tab:blue", label="baseline")
        ax.fill_between(days, base[:, i] - BAND * spread[:, i], base[:, i] + BAND * spread[:, i],
                        color="tab:blue", alpha=0.15, lw=0, label=f"baseline +- {BAND:g} spread")
        ax.set_ylabel(name, fontsize=8)
        ax.legend(loc="upper right", fontsize=7, ncol=3)
    ax = ax_list[-1]
    ax.plot(days, rec.score, lw=0.7, color="tab:purple", label="combined deviation score")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score", fontsize=8)
    ax.set_xlabel("days since " + _iso(t0) + " UTC")
    for ev in events:
        start, end = (float(ev.get("start_ts") or ev.get("ts", t0)) - t0) / 86400, (float(ev.get("ts", t0)) - t0) / 86400
        colour = colours.get(str(ev.get("severity")), "tab:green")
        for a in ax_list:
            a.axvspan(start, max(end, start + 1 / 144), color=colour, alpha=0.18, lw=0)
        ax.annotate(str(ev.get("severity", "event")), (end, 1.0), fontsize=7, color=colour, ha="right", va="top")
    ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"{title} - {len(events)} events", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
