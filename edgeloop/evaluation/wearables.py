"""The Stanford wearables evaluation: our detectors and NightSignal on the same people, in one run.

Per person (:func:`run_person`): the hourly metrics through the engine (deviation events), the
nights (:mod:`device.features.nightly`) and NightSignal (:func:`edgeloop.evaluation.peers.
nightsignal`). Detectors are functions ``(run, threshold) -> alert times``; the night watch's
threshold is its red level (:class:`device.detect.nightwatch.NightWatchConfig.threshold`), the
others ignore it. Outcomes use issue 12's measure (:func:`edgeloop.evaluation.stanford.
window_outcome`): caught at or before onset, alert days per monitored person-month outside
``[onset - 7 d, onset + 21 d]``, pooled over the people with an onset date (people without one
are reported apart: which of their alerts are false is unknown).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from device.detect.nightwatch import NightWatch, NightWatchConfig
from device.features.nightly import NightRecord, night_records
from device.replay import read_stanford, run_wearable
from edgeloop.evaluation import datasets, folds, stanford
from edgeloop.evaluation.datasets import StanfordLabel
from edgeloop.evaluation.peers import NightSignalResult, nightsignal

__all__ = ["DETECTORS", "PersonRun", "Pooled", "alerts", "lopo", "pooled", "run_person"]


@dataclass(frozen=True)
class PersonRun:
    """Everything the detectors need about one person (labels are not in here)."""

    person_id: str
    data_times: np.ndarray  # heart-rate sample times, datetime64[s] (monitored days)
    engine_events: tuple[float, ...]  # epoch seconds of the engine's deviation events
    nights: tuple[NightRecord, ...]
    nightsignal: NightSignalResult


def run_person(person_id: str, with_rest: bool = False) -> PersonRun:
    """Read one person's files from the data folder and run the engine, nights and NightSignal."""
    root = datasets.data_root() / datasets.STANFORD_DIR
    ts_hr, hr = read_stanford(root / f"{person_id}_hr.csv.xz", "heartrate")
    ts_st, st = read_stanford(root / f"{person_id}_steps.csv.xz", "steps")
    _, _, res = run_wearable(ts_hr, hr, ts_st, st, with_rest=with_rest)
    return PersonRun(
        person_id=person_id,
        data_times=(ts_hr * 1e3).astype(np.int64).astype("datetime64[ms]").astype("datetime64[s]"),
        engine_events=tuple(ev.ts for ev in res.events),
        nights=tuple(night_records(ts_hr, hr, ts_st, st)),
        nightsignal=nightsignal(ts_hr, hr, ts_st, st),
    )


def nightwatch_alerts(run: PersonRun, threshold: float | None = None) -> list[float]:
    """Red notifications of a default night watch (``threshold`` replaces its red level)."""
    cfg = NightWatchConfig()
    if threshold is not None:
        cfg = dataclasses.replace(cfg, threshold=float(threshold))
    w = NightWatch(cfg)
    return [a.ts for a in (w.update(n) for n in run.nights) if a.notify]


def _ns(run: PersonRun, level: int) -> list[float]:
    t = run.nightsignal.alert_times(level)
    return (t.astype("datetime64[s]").astype(np.int64)).astype(np.float64).tolist()


# name -> (alert times of a run at a threshold, whether the threshold matters)
DETECTORS: dict[str, tuple[Callable[[PersonRun, float | None], list[float]], bool]] = {
    "night watch (red)": (nightwatch_alerts, True),
    "engine (hourly events)": (lambda r, _t: list(r.engine_events), False),
    "night watch + engine": (lambda r, t: sorted(nightwatch_alerts(r, t) + list(r.engine_events)), True),
    "NightSignal (yellow+red days)": (lambda r, _t: _ns(r, 1), False),
    "NightSignal (red days)": (lambda r, _t: _ns(r, 2), False),
}


def alerts(name: str, run: PersonRun, threshold: float | None = None) -> list[float]:
    """Alert times (epoch seconds) of detector ``name`` on ``run``."""
    return DETECTORS[name][0](run, threshold)


@dataclass(frozen=True)
class Pooled:
    """Pooled over the people with an onset date."""

    caught: int
    n_dated: int
    alert_days: int  # outside the illness windows
    months: float  # monitored months outside the illness windows
    undated_alert_days: int  # alert days of people without an onset date (not in the rate)
    undated_months: float

    @property
    def per_month(self) -> float:
        return self.alert_days / self.months if self.months > 0 else float("nan")


def outcomes(runs: Iterable[PersonRun], labels: Mapping[str, StanfordLabel], name: str,
             threshold: float | None = None) -> list[stanford.WindowOutcome]:  # fmt: skip
    """One :class:`~edgeloop.evaluation.stanford.WindowOutcome` per person."""
    return [stanford.window_outcome(r.person_id, alerts(name, r, threshold), labels.get(r.person_id),
                                    r.data_times) for r in runs]  # fmt: skip


def pooled(outs: Sequence[stanford.WindowOutcome]) -> Pooled:
    dated = [o for o in outs if o.onset is not None]
    undated = [o for o in outs if o.onset is None]
    return Pooled(
        caught=sum(1 for o in dated if o.caught_early), n_dated=len(dated),
        alert_days=sum(o.alert_days_outside for o in dated),
        months=sum(o.months_outside for o in dated),
        undated_alert_days=sum(o.alert_days_outside for o in undated),
        undated_months=sum(o.months_outside for o in undated),
    )  # fmt: skip


def lopo(runs: Sequence[PersonRun], labels: Mapping[str, StanfordLabel], name: str,
         candidates: Sequence[float], budget: float = 1.0) -> list[folds.PersonFold]:  # fmt: skip
    """Leave one dated person out: the threshold chosen on the others, the person scored at it."""
    by_id = {r.person_id: r for r in runs}
    dated = [r.person_id for r in runs if (lb := labels.get(r.person_id)) and lb.onset is not None]

    def evaluate(pid: str, thr: float) -> tuple[bool | None, float | None, int, float]:
        o = stanford.window_outcome(pid, alerts(name, by_id[pid], thr), labels.get(pid),
                                    by_id[pid].data_times)  # fmt: skip
        return o.caught_early, o.first_alert_rel_days, o.alert_days_outside, o.months_outside

    return folds.leave_one_person_out(dated, candidates, evaluate, budget)
