"""PNGs of replays (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device.detect.engine import EngineOutput
from device.detect.nightwatch import NightAssessment
from device.features.nightly import NightRecord
from device.kernels.layout import FLAG_ORDER


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_nab(path: Path, ts: np.ndarray, values: np.ndarray, scores: np.ndarray,
             flags: np.ndarray, alert: float, title: str) -> None:  # fmt: skip
    """The series (rows out of order marked) above its anomaly scores, alerts marked."""
    plt = _pyplot()
    ok = np.isfinite(ts)
    t = (ts[ok] * 1e3).astype(np.int64).astype("datetime64[ms]")
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 1]})  # fmt: skip
    a1.plot(t, values[ok], lw=0.7, color="k", label="value")
    bad = ((flags[ok] & FLAG_ORDER) != 0)
    if bad.any():
        a1.plot(t[bad], values[ok][bad], "x", color="tab:orange", ms=5,
                label="time out of order (not learnt)")  # fmt: skip
    hit = scores[ok] >= alert
    a1.plot(t[hit], values[ok][hit], "o", color="tab:red", ms=4, label=f"score >= {alert}")
    a1.set_title(title)
    a1.legend(loc="upper left", fontsize=8)
    a2.plot(t, scores[ok], lw=0.7, color="tab:red")
    a2.axhline(alert, color="k", lw=0.6, ls="--")
    a2.set_ylim(0, 1)
    a2.set_ylabel("anomaly score")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_wearable(path: Path, grid: np.ndarray, vals: np.ndarray, out: EngineOutput,
                  nights: list[NightRecord], assessments: list[NightAssessment],
                  onset: np.datetime64 | None, title: str) -> None:  # fmt: skip
    """Hourly resting HR with its baseline band and deviation events; overnight resting HR
    coloured by the night watch's level, illness alerts; the onset when known."""
    plt = _pyplot()
    days = grid.astype("datetime64[s]")
    fig, ax = plt.subplots(figsize=(13, 4.5))
    base, sd = out.baseline[:, 0], out.spread[:, 0]
    ax.fill_between(days, base - 2 * sd, base + 2 * sd, color="tab:blue", alpha=0.15,
                    label="hourly baseline +- 2 spread")  # fmt: skip
    ax.plot(days, vals[:, 0], ".", ms=1.5, color="0.5", label="resting HR (hourly)")
    colours = {"green": "tab:green", "yellow": "gold", "red": "tab:red"}
    for level, c in colours.items():
        pts = [(np.datetime64(int(n.ts), "s"), n.rhr) for n, a in zip(nights, assessments, strict=True)
               if a.level == level and np.isfinite(n.rhr)]  # fmt: skip
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, "o", ms=4, color=c, label=f"night ({level})")
    for i, ev in enumerate(out.events):
        ax.axvline(np.datetime64(int(ev.ts), "s"), color="tab:purple", lw=0.8, ls=":",
                   label="deviation event" if i == 0 else None)  # fmt: skip
    for i, a in enumerate([a for a in assessments if a.notify]):
        ax.axvline(np.datetime64(int(a.ts), "s"), color="tab:red", lw=1.5,
                   label="illness alert (red)" if i == 0 else None)  # fmt: skip
    if onset is not None:
        ax.axvline(onset.astype("datetime64[s]"), color="k", lw=2, label="symptom onset")
    ax.set_ylabel("bpm")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
