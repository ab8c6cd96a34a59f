"""Replay recorded data through :class:`device.detect.engine.Engine` with the default config.

* :func:`replay_nab_csv`: NAB ``timestamp,value`` -> ``timestamp,value,anomaly_score``;
* :func:`replay_wearable`: Stanford Fitbit heart rate + steps -> resting HR, hourly metrics,
  events, ``events.csv`` and a plot. Labels are never read here.
"""

from __future__ import annotations

import csv
import logging
import lzma
import os
from pathlib import Path

import numpy as np

from device.detect.engine import Engine, EngineOutput
from device.features.rest import still_flags
from device.features.resting_hr import resting_hr

logger = logging.getLogger(__name__)

WEARABLE_METRICS: tuple[str, ...] = ("resting_hr", "steps")
WEARABLE_DIRECTIONS: dict[str, int] = {"resting_hr": 1, "steps": -1}
MIN_REST_MINUTES = 5  # hours with fewer resting minutes give no resting-HR value
SMOOTH_HOURS = 1  # trailing hours averaged into each resting-HR value (1: the hour alone)
REST_METRIC = "rest"  # optional third metric (with_rest): hours at rest per 24 h, direction +1
REST_MIN_WORN_MINUTES = 360  # a rest value needs this many worn minutes in its trailing 24 h


class ReplayInputError(ValueError):
    """A replay input file does not have the expected format."""


def _epoch(stamps: list[str], path: os.PathLike[str] | str) -> np.ndarray:
    try:
        ns = np.array(stamps, dtype="datetime64[ns]").astype(np.int64)
    except ValueError as exc:
        raise ReplayInputError(
            f"{path}: expected ISO timestamps like '2014-04-01 00:00:00' ({exc})"
        ) from exc
    return ns.astype(np.float64) / 1e9


def replay_nab_csv(in_path: os.PathLike[str] | str, out_path: os.PathLike[str] | str) -> None:
    """Score one NAB file causally; writes ``timestamp,value,anomaly_score`` (score in [0, 1])."""
    with open(in_path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ReplayInputError(
                f"{in_path}: expected header 'timestamp,value', found {header!r}"
            )
        rows = [r for r in reader if r]
    stamps = [r[0] for r in rows]
    values = np.array([float(r[1]) if r[1].strip() else np.nan for r in rows], dtype=np.float64)
    ts = _epoch(stamps, in_path)
    out = Engine(("value",)).process(ts, values.reshape(-1, 1))
    with open(out_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for s, r, c in zip(stamps, rows, out.combined, strict=True):
            w.writerow([s, r[1], repr(float(c))])
    logger.info("replay.nab_done", extra={"path": str(in_path), "rows": len(rows)})


def _read_stanford(path: os.PathLike[str] | str, column: str) -> tuple[np.ndarray, np.ndarray]:
    opener = lzma.open if str(path).endswith(".xz") else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or column not in header or "datetime" not in header:
            raise ReplayInputError(
                f"{path}: expected columns ',user,datetime,{column}', found {header!r}"
            )
        it, iv = header.index("datetime"), header.index(column)
        stamps: list[str] = []
        vals: list[float] = []
        for r in reader:
            stamps.append(r[it])
            vals.append(float(r[iv]) if r[iv] else np.nan)
    return _epoch(stamps, path), np.array(vals, dtype=np.float64)


def hourly_metrics(
    ts_hr: np.ndarray,
    hr: np.ndarray,
    ts_steps: np.ndarray,
    steps: np.ndarray,
    min_rest_minutes: int = MIN_REST_MINUTES,
    smooth_hours: int = SMOOTH_HOURS,
    with_rest: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly grid ``(hour_end_ts, values (n, 2 or 3))``: mean resting HR and step sum (+ rest).

    Resting HR is NaN in hours with fewer than ``min_rest_minutes`` resting minutes (a mean of
    one or two minutes is mostly noise). Hours without any heart-rate sample are "not worn":
    both metrics NaN there. ``with_rest`` adds a third column: hours at rest per 24 h over the
    trailing 24 h of worn minutes (:mod:`device.features.rest`; a minute is worn when it has a
    heart-rate sample: Fitbit records zero steps when the watch is off too).
    """
    t_r, r = resting_hr(ts_hr, hr, ts_steps, steps)
    ok = np.isfinite(ts_hr)
    h0 = np.floor(np.min(ts_hr[ok]) / 3600.0)
    h1 = np.floor(np.max(ts_hr[ok]) / 3600.0)
    n = int(h1 - h0) + 1
    grid = (h0 + 1 + np.arange(n)) * 3600.0  # end of each hour: when its data is complete

    def _bin(t: np.ndarray) -> np.ndarray:
        return (np.floor(t / 3600.0) - h0).astype(np.int64)

    def _sum(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = np.isfinite(t) & np.isfinite(v)
        b = _bin(t[m])
        keep = (b >= 0) & (b < n)
        return (
            np.bincount(b[keep], weights=v[m][keep], minlength=n),
            np.bincount(b[keep], minlength=n).astype(np.float64),
        )

    rs, rc = _sum(t_r, r)
    ss, _ = _sum(ts_steps, steps)
    _, hc = _sum(ts_hr, hr)
    vals = np.full((n, 2), np.nan)
    if smooth_hours > 1:  # trailing sums over the last smooth_hours hours (causal)
        k = np.ones(int(smooth_hours))
        rs_w, rc_w = np.convolve(rs, k)[:n], np.convolve(rc, k)[:n]
    else:
        rs_w, rc_w = rs, rc
    ok_hour = (rc > 0) & (rc_w >= max(1, min_rest_minutes))
    with np.errstate(invalid="ignore", divide="ignore"):
        vals[:, 0] = np.where(ok_hour, rs_w / np.maximum(rc_w, 1), np.nan)
    vals[:, 1] = np.where(hc > 0, ss, np.nan)
    if with_rest:
        vals = np.column_stack([vals, _rest_hours(ts_hr, hr, ts_steps, steps, h0, n, hc > 0)])
    return grid, vals


def _rest_hours(ts_hr: np.ndarray, hr: np.ndarray, ts_steps: np.ndarray, steps: np.ndarray, h0: float, n: int,
                worn_hour: np.ndarray) -> np.ndarray:
    ok = np.isfinite(ts_steps) & np.isfinite(steps)
    smin = np.floor(ts_steps[ok] / 60.0).astype(np.int64)
    st = steps[ok]
    order = np.argsort(smin, kind="stable")
    smin, st = smin[order], st[order]
    first = np.ones(len(smin), dtype=bool)
    first[1:] = smin[1:] != smin[:-1]  # one count per minute (the first)
    smin, st = smin[first], st[first]
    worn = np.isin(smin, np.unique(np.floor(ts_hr[np.isfinite(ts_hr) & np.isfinite(hr)] / 60.0).astype(np.int64)))
    smin, st = smin[worn], st[worn]
    still = still_flags(smin * 60.0, st)
    b = smin // 60 - int(h0)
    keep = (b >= 0) & (b < n)
    rc = np.bincount(b[keep], weights=still[keep], minlength=n)
    wc = np.bincount(b[keep], minlength=n).astype(np.float64)
    k = np.ones(24)
    rc_w, wc_w = np.convolve(rc, k)[:n], np.convolve(wc, k)[:n]
    return np.where(worn_hour & (wc_w >= REST_MIN_WORN_MINUTES),
                    24.0 * rc_w / np.maximum(wc_w, 1.0), np.nan)


def run_wearable(
    ts_hr: np.ndarray, hr: np.ndarray, ts_steps: np.ndarray, steps: np.ndarray,
    with_rest: bool = False,
) -> tuple[np.ndarray, np.ndarray, EngineOutput]:
    """Hourly metrics through a default Engine: ``(grid, values, output)``."""
    grid, vals = hourly_metrics(ts_hr, hr, ts_steps, steps, with_rest=with_rest)
    names = WEARABLE_METRICS + ((REST_METRIC,) if with_rest else ())
    dirs = {**WEARABLE_DIRECTIONS, **({REST_METRIC: 1} if with_rest else {})}
    return grid, vals, Engine(names, directions=dirs).process(grid, vals)


def _plot(path: Path, grid: np.ndarray, vals: np.ndarray, out: EngineOutput, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = grid.astype("datetime64[s]")
    fig, ax = plt.subplots(figsize=(12, 4))
    base, sd = out.baseline[:, 0], out.spread[:, 0]
    ax.fill_between(days, base - 2 * sd, base + 2 * sd, color="tab:blue", alpha=0.2,
                    label="baseline +- 2 spread")  # fmt: skip
    ax.plot(days, base, color="tab:blue", lw=1, label="baseline")
    ax.plot(days, vals[:, 0], ".", ms=2, color="k", label="resting HR (hourly)")
    for i, ev in enumerate(out.events):
        ax.axvline(np.datetime64(int(ev.ts), "s"), color="tab:red", lw=1,  # type: ignore[arg-type]
                   label="alert" if i == 0 else None)  # fmt: skip
    ax.set_ylabel("bpm")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def replay_wearable(
    hr_path: os.PathLike[str] | str,
    steps_path: os.PathLike[str] | str,
    out_dir: os.PathLike[str] | str,
    person_id: str,
    with_rest: bool = False,
) -> dict[str, object]:
    """Replay one person's Fitbit files; write ``events.csv`` and ``<person>_rhr.png``.
    ``with_rest`` scores hours at rest per day as a third metric (not the default: see
    device/detect/README.md, Stanford attempts).

    Returns a summary: person_id, hours, events (ISO timestamps of alerts), event_ts (epoch s),
    paths of the written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ts_hr, hr = _read_stanford(hr_path, "heartrate")
    ts_st, st = _read_stanford(steps_path, "steps")
    if ts_hr.size == 0:
        raise ReplayInputError(f"{hr_path}: no heart-rate rows")
    grid, vals, res = run_wearable(ts_hr, hr, ts_st, st, with_rest=with_rest)
    events_path = out / "events.csv"
    with events_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["person_id", "start", "detected", "metrics", "directions", "score",
                    "severity", "baseline", "observed"])  # fmt: skip
        for ev in res.events:
            w.writerow([
                person_id,
                str(np.datetime64(int(ev.start_ts), "s")),
                str(np.datetime64(int(ev.ts), "s")),
                "|".join(ev.metrics),
                "|".join(str(d) for d in ev.directions),
                f"{ev.score:.3f}",
                ev.severity,
                "|".join(f"{b:.2f}" for b in ev.baseline),
                "|".join(f"{o:.2f}" for o in ev.observed),
            ])  # fmt: skip
    plot_path = out / f"{person_id}_rhr.png"
    _plot(plot_path, grid, vals, res, f"{person_id}: resting heart rate and alerts")
    return {
        "person_id": person_id,
        "hours": int(grid.shape[0]),
        "events": [str(np.datetime64(int(ev.ts), "s")) for ev in res.events],
        "event_ts": [ev.ts for ev in res.events],
        "events_csv": str(events_path),
        "plot": str(plot_path),
    }
