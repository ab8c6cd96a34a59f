"""What the rules read about the past, behind a small protocol, so deciding is pure.

``AlertHistory`` answers the questions a rule's conditions ask (has this episode been decided,
was this individual notified about these metrics lately, is the device collecting, ...) and takes
the decision's own writes (the alert, its incident). :class:`MemoryHistory` keeps all of it in
memory: the rules' tests fill one by hand, and the store's repository
(``cloud.store.alerts.AlertRepository``) preloads one per batch with a few queries, lets the rules
decide every event of the batch against it, and writes what they added in one go.

:class:`AlertStore` is the rest of what the rules do with the store (reminders, follow-ups, owner
settings, closing incidents): the store's ``AlertRepository`` is one, and a ``RulesStore`` (the
cloud store) hands it out, so the rules themselves hold no SQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from cloud.rules.policy import NotificationPolicy

RecordSpan = tuple[float | None, float | None]  # ts of a (device, incarnation)'s first and newest record by seq


class AlertHistory(Protocol):
    """The rules' view of stored alerts, incidents, owner settings and records."""

    def prefs(self, individual_id: str) -> Mapping[str, Any]:
        """The individual's ``individual_prefs`` row ({} if none)."""
        ...

    def record_span(self, device_id: str, incarnation: str) -> RecordSpan: ...

    def episode_severities(self, device_id: str, individual_id: str, start_ts: float,
                           metrics_json: str) -> list[str]: ...

    def notified_between(self, individual_id: str, metrics_json: str, lo: float, hi: float) -> bool:
        """A notification about this metric set in (lo, hi]."""
        ...

    def collecting_between(self, device_id: str, lo: float, hi: float) -> bool:
        """A collect_more decision for the device in (lo, hi]."""
        ...

    def alerts_between(self, individual_id: str, lo: float, hi: float) -> int:
        """Alerts of the individual with ts in (lo, hi]."""
        ...

    def personal_thresholds(self, individual_id: str) -> dict[tuple[str, int], float]: ...

    def open_incidents(self, individual_id: str) -> list[dict[str, Any]]:
        """The individual's open incidents, newest (by opened_at) first."""
        ...

    def add_alert(self, row: dict[str, Any]) -> None: ...

    def add_incident(self, row: dict[str, Any]) -> None: ...

    def update_incident(self, incident_id: str, changes: dict[str, Any]) -> None: ...


class AlertStore(Protocol):
    """The stored alerts, incidents and owner settings as the rules read and change them."""

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction (two aggregators must not both act on the same reads)."""
        ...

    def lock_keys(self, keys: Iterable[str]) -> None: ...

    def preload(self, policy: NotificationPolicy, items: Sequence[tuple[str, str, float, float, float]],
                pairs: Sequence[tuple[str, str]] = ()) -> MemoryHistory:
        """The history a batch of events needs: ``items`` are (device id, individual id, onset,
        decision time, record ts); ``pairs`` the (device, incarnation) whose record span to load."""
        ...

    def save(self, history: MemoryHistory) -> None:
        """Write what the decisions added to ``history``."""
        ...

    def alert(self, alert_id: str) -> dict[str, Any] | None: ...

    def update_alert(self, alert_id: str, changes: Mapping[str, Any]) -> None: ...

    def event_body(self, alert_id: str) -> dict[str, Any]:
        """The stored event body behind an alert; {} if the record is gone."""
        ...

    def notify_deferred(self, incident_id: str, t: float) -> None:
        """The incident's deferred alerts are notified at ``t``."""
        ...

    def collecting_due(self, decided_before: float) -> list[dict[str, Any]]: ...

    def first_raw(self, device_id: str, since: float) -> float | None: ...

    def raw_bodies(self, device_id: str, lo: float, hi: float, limit: int) -> list[str]: ...

    def open_incidents(self, individual_id: str | None = None) -> list[dict[str, Any]]:
        """Open incidents (of one individual, or all), newest (by opened_at) first."""
        ...

    def unanswered_incidents(self) -> list[dict[str, Any]]: ...

    def add_incident(self, row: Mapping[str, Any]) -> None: ...

    def update_incident(self, incident_id: str, changes: Mapping[str, Any]) -> None: ...

    def close_incident(self, incident_id: str, t: float) -> None: ...

    def prefs(self, individual_id: str) -> dict[str, Any]: ...

    def set_prefs(self, individual_id: str, values: Mapping[str, Any]) -> None: ...


class RulesStore(Protocol):
    """What the rules' entry points take as ``store`` (the cloud store is one)."""

    @property
    def alerts(self) -> AlertStore: ...

    def reject(self, source: str, reason: str, size: int) -> None:
        """Count a rejected message."""
        ...


class MemoryHistory:
    """An :class:`AlertHistory` in memory; remembers what the decisions added and changed."""

    def __init__(self, alerts: Iterable[Mapping[str, Any]] = (), incidents: Iterable[Mapping[str, Any]] = (),
                 prefs: Mapping[str, Mapping[str, Any]] | None = None,
                 thresholds: Mapping[str, dict[tuple[str, int], float]] | None = None,
                 spans: Mapping[tuple[str, str], RecordSpan] | None = None,
                 span_loader: Callable[[str, str], RecordSpan] | None = None) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._by_ind: dict[str, list[dict[str, Any]]] = {}
        self._by_dev: dict[str, list[dict[str, Any]]] = {}
        seen: set[str] = set()
        for a in alerts:
            if a["alert_id"] not in seen:
                seen.add(a["alert_id"])
                self._index(dict(a))
        self.incidents: dict[str, dict[str, Any]] = {str(i["incident_id"]): dict(i) for i in incidents}
        self._prefs = {k: dict(v) for k, v in (prefs or {}).items()}
        self._thresholds = dict(thresholds or {})
        self._spans = dict(spans or {})
        self._span_loader = span_loader
        self.new_alerts: list[dict[str, Any]] = []
        self.new_incidents: list[str] = []
        self.changed_incidents: dict[str, dict[str, Any]] = {}

    def _index(self, a: dict[str, Any]) -> None:
        self.alerts.append(a)
        self._by_ind.setdefault(a["individual_id"], []).append(a)
        self._by_dev.setdefault(a["device_id"], []).append(a)

    # ---- reads
    def prefs(self, individual_id: str) -> Mapping[str, Any]:
        return self._prefs.get(individual_id, {})

    def record_span(self, device_id: str, incarnation: str) -> RecordSpan:
        key = (device_id, incarnation)
        if key not in self._spans:
            self._spans[key] = self._span_loader(device_id, incarnation) if self._span_loader else (None, None)
        return self._spans[key]

    def episode_severities(self, device_id: str, individual_id: str, start_ts: float,
                           metrics_json: str) -> list[str]:
        return [a["severity"] for a in self._by_dev.get(device_id, ())
                if a["individual_id"] == individual_id and a["start_ts"] == start_ts
                and a["metrics"] == metrics_json]

    def notified_between(self, individual_id: str, metrics_json: str, lo: float, hi: float) -> bool:
        return any(a["metrics"] == metrics_json and a["notified_at"] is not None and lo < a["notified_at"] <= hi
                   for a in self._by_ind.get(individual_id, ()))

    def collecting_between(self, device_id: str, lo: float, hi: float) -> bool:
        return any(a["action"] == "collect_more" and a["decided_at"] is not None and lo < a["decided_at"] <= hi
                   for a in self._by_dev.get(device_id, ()))

    def alerts_between(self, individual_id: str, lo: float, hi: float) -> int:
        return sum(1 for a in self._by_ind.get(individual_id, ()) if a["ts"] is not None and lo < a["ts"] <= hi)

    def personal_thresholds(self, individual_id: str) -> dict[tuple[str, int], float]:
        return self._thresholds.get(individual_id, {})

    def open_incidents(self, individual_id: str) -> list[dict[str, Any]]:
        rows = [i for i in self.incidents.values() if i["individual_id"] == individual_id and i["closed_at"] is None]
        return sorted(rows, key=lambda i: i["opened_at"], reverse=True)

    # ---- writes
    def add_alert(self, row: dict[str, Any]) -> None:
        self._index(row)
        self.new_alerts.append(row)

    def add_incident(self, row: dict[str, Any]) -> None:
        self.incidents[row["incident_id"]] = dict(row)
        self.new_incidents.append(row["incident_id"])

    def update_incident(self, incident_id: str, changes: dict[str, Any]) -> None:
        self.incidents[incident_id].update(changes)
        if incident_id not in self.new_incidents:
            self.changed_incidents.setdefault(incident_id, {}).update(changes)
