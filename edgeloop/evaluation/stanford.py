"""Per-person evaluation of alerts on the Stanford COVID-19 wearables data.

For every person with a known onset (symptom date, else diagnosis date) the alerts are split:

* *healthy period*: more than ``healthy_gap_days`` (21) before onset; every alert there is false;
  the rate is per person-month of days that have heart-rate data in that period;
* *detection window*: ``[onset - early_days, onset + late_days]`` (7 before, 21 after: LAAD's
  window, whose per-person first anomaly is clipped at -7.0 days); the first alert there is
  "the" detection, reported in days relative to onset 00:00 (negative = before onset); it is
  *caught early* when it falls on or before the onset date (before onset + 1 day);
* alerts between the two (21 to 7 days before onset) are counted apart ("grey"): neither false
  nor a detection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.evaluation.datasets import LaadResult, StanfordLabel

__all__ = [
    "DAYS_PER_MONTH",
    "PersonOutcome",
    "StanfordSummary",
    "evaluate_person",
    "summarise",
    "to_datetime64",
]

DAYS_PER_MONTH = 30.4375
_DAY = np.timedelta64(1, "D")


def to_datetime64(times: Iterable[object] | np.ndarray) -> np.ndarray:
    """Alert times as datetime64[s]; floats are epoch seconds of the files' naive clock."""
    arr = np.asarray(list(times) if not isinstance(times, np.ndarray) else times)
    if arr.size == 0:
        return np.array([], dtype="datetime64[s]")
    if np.issubdtype(arr.dtype, np.number):
        return (
            (arr.astype(np.float64) * 1e3)
            .astype("int64")
            .astype("datetime64[ms]")
            .astype("datetime64[s]")
        )
    try:
        return arr.astype("datetime64[s]")
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"alert times must be datetime64, ISO strings or epoch seconds; found {arr.dtype}"
        ) from exc


@dataclass(frozen=True)
class PersonOutcome:
    """Alert outcome for one person."""

    person_id: str
    onset: np.datetime64 | None
    onset_source: str  # "symptom" | "diagnosis" | "none"
    n_alerts: int
    first_alert_rel_days: float | None  # first alert in the detection window, rel. to onset
    caught_early: bool | None  # None when no onset is known
    grey_alerts: int  # alerts between the healthy period and the detection window
    false_alerts: int  # alerts in the healthy period
    false_alert_days: int  # distinct days with an alert in the healthy period
    healthy_months: float  # months with heart-rate data in the healthy period
    laad: LaadResult | None = None

    @property
    def false_alerts_per_month(self) -> float | None:
        """False alerts per person-month of healthy, monitored days."""
        if self.healthy_months <= 0:
            return None
        return self.false_alerts / self.healthy_months


def evaluate_person(
    person_id: str,
    alert_times: Iterable[object] | np.ndarray,
    label: StanfordLabel | None,
    data_times: np.ndarray,
    *,
    healthy_gap_days: float = 21.0,
    early_days: float = 7.0,
    late_days: float = 21.0,
    laad: LaadResult | None = None,
) -> PersonOutcome:
    """Score one person's alerts against onset.

    alert_times: when alerts were raised (datetime64, ISO strings, or epoch seconds).
    data_times: heart-rate timestamps (to count monitored days in the healthy period).
    """
    alerts = np.sort(to_datetime64(alert_times))
    onset = label.onset if label is not None else None
    source = label.onset_source if label is not None else "none"
    if onset is None:
        return PersonOutcome(person_id, None, source, len(alerts), None, None, 0, 0, 0, 0.0, laad)
    onset_s = np.asarray(onset).astype("datetime64[s]")[()]
    gap = np.timedelta64(int(round(healthy_gap_days * 86400)), "s")
    early = np.timedelta64(int(round(early_days * 86400)), "s")
    late = np.timedelta64(int(round(late_days * 86400)), "s")
    if early > gap:
        raise ValueError(
            f"early_days ({early_days}) must not exceed healthy_gap_days ({healthy_gap_days})"
        )
    healthy_end = onset_s - gap
    healthy = alerts[alerts < healthy_end]
    grey = alerts[(alerts >= healthy_end) & (alerts < onset_s - early)]
    window = alerts[(alerts >= onset_s - early) & (alerts <= onset_s + late)]
    first = None
    caught = False
    if len(window):
        first = float((window[0] - onset_s) / np.timedelta64(1, "s")) / 86400.0
        caught = bool(window[0] < onset_s + _DAY)
    days = np.unique(np.asarray(data_times).astype("datetime64[D]"))
    healthy_days = int(np.count_nonzero(days < np.asarray(healthy_end).astype("datetime64[D]")))
    return PersonOutcome(
        person_id=person_id,
        onset=onset,
        onset_source=source,
        n_alerts=len(alerts),
        first_alert_rel_days=first,
        caught_early=caught,
        grey_alerts=len(grey),
        false_alerts=len(healthy),
        false_alert_days=len(np.unique(healthy.astype("datetime64[D]"))),
        healthy_months=healthy_days / DAYS_PER_MONTH,
        laad=laad,
    )


@dataclass(frozen=True)
class StanfordSummary:
    """Totals over people with an onset date."""

    n_with_onset: int
    caught_early: int
    laad_early: int
    false_alerts: int
    healthy_months: float

    @property
    def false_alerts_per_month(self) -> float | None:
        """Pooled false alerts per person-month."""
        return self.false_alerts / self.healthy_months if self.healthy_months > 0 else None


# The published online detector (Mishra et al. 2020, ported code) on these five people: 3 of 5.
PUBLISHED_ONLINE_EARLY = 3


def summarise(
    outcomes: Sequence[PersonOutcome], laad: Mapping[str, LaadResult] | None = None
) -> StanfordSummary:
    """Pool the per-person outcomes of people with an onset date."""
    labelled = [o for o in outcomes if o.onset is not None]
    laad = laad or {}
    return StanfordSummary(
        n_with_onset=len(labelled),
        caught_early=sum(bool(o.caught_early) for o in labelled),
        laad_early=sum(
            1 for o in labelled if (r := laad.get(o.person_id)) is not None and r.timing == "Early"
        ),
        false_alerts=sum(o.false_alerts for o in labelled),
        healthy_months=sum(o.healthy_months for o in labelled),
    )


@dataclass(frozen=True)
class WindowOutcome:
    """Alerts against the illness window ``[onset - 7 d, onset + 21 d]`` (issue 12's measure)."""

    person_id: str
    onset: np.datetime64 | None
    caught_early: bool | None  # first alert in the window on or before the onset date
    first_alert_rel_days: float | None
    alert_days_outside: int  # distinct days with an alert outside the window
    months_outside: float  # monitored months (days with heart-rate data) outside the window

    @property
    def per_month(self) -> float | None:
        return self.alert_days_outside / self.months_outside if self.months_outside > 0 else None


def window_outcome(
    person_id: str,
    alert_times: Iterable[object] | np.ndarray,
    label: StanfordLabel | None,
    data_times: np.ndarray,
    *,
    early_days: float = 7.0,
    late_days: float = 21.0,
) -> WindowOutcome:
    """Caught at or before onset, and alert days per monitored month outside the illness window.

    Without an onset date there is no window: every alert day counts as outside (the caller
    decides whether such a person enters a pooled rate)."""
    alerts = np.sort(to_datetime64(alert_times))
    days = np.unique(np.asarray(data_times).astype("datetime64[D]"))
    alert_days = np.unique(alerts.astype("datetime64[D]"))
    onset = label.onset if label is not None else None
    if onset is None:
        return WindowOutcome(person_id, None, None, None, len(alert_days), len(days) / DAYS_PER_MONTH)
    onset_s = np.asarray(onset).astype("datetime64[s]")[()]
    lo = onset_s - np.timedelta64(int(round(early_days * 86400)), "s")
    hi = onset_s + np.timedelta64(int(round(late_days * 86400)), "s")
    inside = alerts[(alerts >= lo) & (alerts <= hi)]
    first = None
    caught = False
    if len(inside):
        first = float((inside[0] - onset_s) / np.timedelta64(1, "s")) / 86400.0
        caught = bool(inside[0] < onset_s + _DAY)
    lo_d, hi_d = lo.astype("datetime64[D]"), hi.astype("datetime64[D]")
    out_days = days[(days < lo_d) | (days > hi_d)]
    out_alerts = alert_days[(alert_days < lo_d) | (alert_days > hi_d)]
    return WindowOutcome(person_id, onset, caught, first, len(out_alerts),
                         len(out_days) / DAYS_PER_MONTH)  # fmt: skip
