"""Wearable replay (Stanford Fitbit heart rate + minute steps): two views, one per time scale.

* hourly metrics (resting heart rate, steps) through the engine: deviation events;
* nights (:mod:`device.features.nightly`: overnight resting heart rate, restlessness, the day's
  steps) through :class:`device.detect.nightwatch.NightWatch`: yellow (watch) and red (act)
  illness alerts, one notification per red episode.

Labels are never read here; the symptom onset, when the caller knows it, only marks the plot.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path

import numpy as np

from device.detect.engine import Engine, EngineOutput
from device.detect.nightwatch import NightAssessment, NightWatch, NightWatchConfig
from device.features.nightly import NightRecord, night_records
from device.features.rest import still_flags
from device.features.resting_hr import resting_hr
from device.replay.common import (
    Progress,
    ReplayInputError,
    RowProblems,
    csv_rows,
    parse_float,
    parse_time,
)

logger = logging.getLogger(__name__)

WEARABLE_METRICS: tuple[str, ...] = ("resting_hr", "steps")
WEARABLE_DIRECTIONS: dict[str, int] = {"resting_hr": 1, "steps": -1}
MIN_REST_MINUTES = 5  # hours with fewer resting minutes give no resting-HR value
SMOOTH_HOURS = 1  # trailing hours averaged into each resting-HR value (1: the hour alone)
REST_METRIC = "rest"  # optional third metric (with_rest): hours at rest per 24 h, direction +1
REST_MIN_WORN_MINUTES = 360  # a rest value needs this many worn minutes in its trailing 24 h


def read_stanford(path: os.PathLike[str] | str, column: str, problems: RowProblems | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(epoch seconds, values)`` of a Stanford file (``,user,datetime,<column>``, .xz or
    plain). A row whose time or value is not one is skipped, counted in ``problems`` with its
    line number."""
    problems = problems if problems is not None else RowProblems()
    stamps: list[float] = []
    vals: list[float] = []
    with csv_rows(path) as reader:
        header = next(reader, None)
        if header is None or column not in header or "datetime" not in header:
            raise ReplayInputError(
                f"{path}: expected columns ',user,datetime,{column}', found {header!r}"
            )
        it, iv = header.index("datetime"), header.index(column)
        for r in reader:
            if not r:
                continue
            if len(r) <= max(it, iv):
                problems.add(f"short rows in {Path(path).name} (skipped)", reader.line_num)
                continue
            t = parse_time(r[it])
            v = parse_float(r[iv])
            if not np.isfinite(t) or v is None:
                problems.add(f"garbage rows in {Path(path).name} (skipped)", reader.line_num)
                continue
            stamps.append(t)
            vals.append(v)
    return np.array(stamps, dtype=np.float64), np.array(vals, dtype=np.float64)


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


def run_nights(ts_hr: np.ndarray, hr: np.ndarray, ts_steps: np.ndarray, steps: np.ndarray,
               config: NightWatchConfig | None = None
               ) -> tuple[list[NightRecord], list[NightAssessment]]:  # fmt: skip
    """Night records through a default :class:`NightWatch`: ``(nights, assessments)``."""
    nights = night_records(ts_hr, hr, ts_steps, steps)
    watch = NightWatch(config)
    return nights, [watch.update(n) for n in nights]


def _write_events(path: Path, person_id: str, res: EngineOutput,
                  assessments: list[NightAssessment]) -> None:  # fmt: skip
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["person_id", "kind", "level", "start", "detected", "metrics", "directions",
                    "score", "severity", "baseline", "observed"])  # fmt: skip
        rows = []
        for ev in res.events:
            rows.append((ev.ts, [
                person_id, "deviation", "", str(np.datetime64(int(ev.start_ts), "s")),
                str(np.datetime64(int(ev.ts), "s")), "|".join(ev.metrics),
                "|".join(str(d) for d in ev.directions), f"{ev.score:.3f}", ev.severity,
                "|".join(f"{b:.2f}" for b in ev.baseline), "|".join(f"{o:.2f}" for o in ev.observed),
            ]))  # fmt: skip
        for a in assessments:
            if a.notify:
                rows.append((a.ts, [
                    person_id, "illness", a.level, "", str(np.datetime64(int(a.ts), "s")),
                    "resting_hr|steps|restless", "1|-1|1", f"{a.evidence:.2f}", "critical",
                    "|".join(f"{a.baseline[f]:.2f}" for f in ("rhr", "steps", "restless")),
                    "|".join(f"{a.z[f]:.2f}" for f in ("rhr", "steps", "restless")),
                ]))  # fmt: skip
        for _, row in sorted(rows, key=lambda r: r[0]):
            w.writerow(row)


def _write_nights(path: Path, nights: list[NightRecord], assessments: list[NightAssessment]
                  ) -> None:  # fmt: skip
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["night", "rhr", "rest_minutes", "restless", "steps_day_before", "z_rhr",
                    "z_steps_drop", "z_restless", "night_z", "evidence", "level", "notify"])  # fmt: skip
        for n, a in zip(nights, assessments, strict=True):
            w.writerow([str(np.datetime64(n.day, "D")), f"{n.rhr:.2f}", n.rest_minutes,
                        f"{n.restless:.0f}", f"{n.steps:.0f}", f"{a.z['rhr']:.2f}",
                        f"{a.z['steps']:.2f}", f"{a.z['restless']:.2f}", f"{a.night:.2f}",
                        f"{a.evidence:.2f}", a.level, int(a.notify)])  # fmt: skip


def replay_wearable(
    hr_path: os.PathLike[str] | str,
    steps_path: os.PathLike[str] | str,
    out_dir: os.PathLike[str] | str,
    person_id: str,
    with_rest: bool = False,
    *,
    onset: np.datetime64 | str | None = None,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Replay one person's Fitbit files; write ``events.csv`` (deviation events and illness
    alerts), ``nights.csv`` and ``<person>_rhr.png`` (``onset``, when known, is marked on it).
    ``with_rest`` scores hours at rest per day as a third hourly metric (not the default: see
    device/detect/README.md, Stanford attempts).

    Returns a summary: person_id, hours, nights, events (ISO times of deviation events),
    event_ts, alerts / alert_ts (illness alerts: red notifications), red_nights, the problems
    met in the files, the paths written and a one-line ``line``.
    """
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = RowProblems()
    say(f"{person_id}: reading {Path(hr_path).name}")
    ts_hr, hr = read_stanford(hr_path, "heartrate", problems)
    say(f"{person_id}: reading {Path(steps_path).name}")
    ts_st, st = read_stanford(steps_path, "steps", problems)
    if ts_hr.size == 0:
        raise ReplayInputError(f"{hr_path}: no heart-rate rows")
    say(f"{person_id}: hourly metrics through the engine ({ts_hr.size:,} heart-rate rows)")
    grid, vals, res = run_wearable(ts_hr, hr, ts_st, st, with_rest=with_rest)
    say(f"{person_id}: nights through the night watch")
    nights, assessments = run_nights(ts_hr, hr, ts_st, st)
    events_path = out / "events.csv"
    _write_events(events_path, person_id, res, assessments)
    nights_path = out / "nights.csv"
    _write_nights(nights_path, nights, assessments)
    plot_path = out / f"{person_id}_rhr.png"
    from device.replay.plots import plot_wearable

    onset_d = None if onset is None else np.datetime64(str(onset), "D")
    plot_wearable(plot_path, grid, vals, res, nights, assessments, onset_d,
                  f"{person_id}: resting heart rate, nights and alerts")  # fmt: skip
    alerts = [a for a in assessments if a.notify]
    red_nights = sum(1 for a in assessments if a.level == "red")
    seconds = time.perf_counter() - t0
    line = (f"{person_id}: {grid.shape[0]} hours, {len(nights)} nights, {len(res.events)} "
            f"deviation events, {len(alerts)} illness alerts (red nights {red_nights})"
            + (f", {problems.describe()}" if problems.counts else "") + f", {seconds:.1f} s")  # fmt: skip
    return {
        "person_id": person_id,
        "hours": int(grid.shape[0]),
        "nights": len(nights),
        "events": [str(np.datetime64(int(ev.ts), "s")) for ev in res.events],
        "event_ts": [ev.ts for ev in res.events],
        "alerts": [str(np.datetime64(int(a.ts), "s")) for a in alerts],
        "alert_ts": [a.ts for a in alerts],
        "red_nights": red_nights,
        "problems": dict(problems.counts),
        "events_csv": str(events_path),
        "nights_csv": str(nights_path),
        "plot": str(plot_path),
        "line": line,
    }
