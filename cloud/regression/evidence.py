"""Read the evidence the loop learns from: alerts and the owners' feedback on them.

The ``alerts`` and ``feedback`` tables belong to ``cloud/rules`` and ``cloud/feedback``; this module
only reads them (their SQL: :class:`cloud.store.regression.EvidenceRepository`). The labelling is
defined once, here, and used by the retraining rules, the regression cases and the rollout
quality gates:

* an alert was *notified* when its ``action`` is ``notify`` or ``notified_at`` is set;
* the latest explicit feedback per alert (``confirm``, ``dismiss``, ``normal_for_her``, ``label``)
  with ``ts <= now`` decides its outcome:

  ========================  ====================  ==============
  feedback                  alert notified        alert not sent
  ========================  ====================  ==============
  confirm                   ``tp``                ``miss``
  dismiss / normal_for_her  ``fp``                (none)
  label in MISS_LABELS      ``miss``              ``miss``
  label in FALSE_LABELS     ``fp``                (none)
  other label               (none, exported)      (none)
  ========================  ====================  ==============

* feedback with an empty ``alert_id`` and a miss label is an owner-reported miss (no alert).

Implicit feedback (``delivered``, ``opened``, ``acted``, ``ignored``) never labels an alert; the
rollout gates use ``ignored`` for the ignore rate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from cloud.store.backend import Backend
from cloud.store.db import CloudStore
from cloud.store.regression import EvidenceRepository

logger = logging.getLogger(__name__)

DAY = 86400.0
EXPLICIT_ACTIONS = ("confirm", "dismiss", "normal_for_her", "label")
MISS_LABELS = frozenset({"miss", "missed", "missed_event", "missed_alert"})
FALSE_LABELS = frozenset({"false_alarm", "false_positive", "normal"})
Outcome = Literal["tp", "fp", "miss"]

JSON_ALERT_COLUMNS = ("metrics", "directions", "baseline", "observed")


@dataclass(frozen=True)
class Labelled:
    """One alert (or owner-reported miss) with the outcome its latest explicit feedback gives."""

    outcome: Outcome | None
    alert_id: str | None
    device_id: str
    individual_id: str
    seq: int | None
    ts: float
    model_version: str | None
    detector_version: str | None
    notified: bool
    severity: str | None
    score: float | None
    metrics: tuple[str, ...]
    feedback_id: int
    feedback_action: str
    feedback_label: str
    feedback_ts: float
    alert: dict[str, Any] = field(default_factory=dict)

    @property
    def case_kind(self) -> str | None:
        """Regression-case kind: ``miss``, ``false_alarm``, ``confirmed`` (a true positive the owner
        confirmed: without these a candidate that never alerts would pass every false-alarm case)."""
        return {"miss": "miss", "fp": "false_alarm", "tp": "confirmed"}.get(self.outcome or "")


EvidenceSource = CloudStore | Backend


def evidence_repo(source: EvidenceSource) -> EvidenceRepository:
    """The evidence reads of a store (or of its back end)."""
    return EvidenceRepository(source.backend if isinstance(source, CloudStore) else source)


def version_key(v: Any) -> str | None:
    """Model versions are compared as text (alerts may store ``3`` or ``"3"``)."""
    return None if v is None or v == "" else str(v)


def _json(x: Any) -> Any:
    if not isinstance(x, str) or not x:
        return x
    try:
        return json.loads(x)
    except ValueError:
        return None


def is_notified(alert: dict[str, Any]) -> bool:
    return alert.get("action") == "notify" or alert.get("notified_at") is not None


def classify(notified: bool, action: str, label: str) -> Outcome | None:
    """The outcome of one explicit feedback (see the module table)."""
    label = (label or "").strip().lower()
    if action == "confirm":
        return "tp" if notified else "miss"
    if action in ("dismiss", "normal_for_her"):
        return "fp" if notified else None
    if action == "label":
        if label in MISS_LABELS:
            return "miss"
        if label in FALSE_LABELS:
            return "fp" if notified else None
    return None


def parse_alert(r: dict[str, Any]) -> dict[str, Any]:
    """Decode an alert row's JSON columns (metrics, directions, baseline, observed) in place."""
    for k in JSON_ALERT_COLUMNS:
        if k in r:
            r[k] = _json(r[k])
    return r


def load_alerts(source: EvidenceSource, where: str = "", args: list[Any] | None = None, *,
                parse: bool = True) -> list[dict[str, Any]]:
    """Alert rows (``where``: an optional condition with ``?`` placeholders), oldest first;
    ``parse=False`` leaves JSON columns as text."""
    rows = evidence_repo(source).alerts(where=where, args=args or [])
    return [parse_alert(r) for r in rows] if parse else rows


def load_feedback(source: EvidenceSource, until: float, where: str = "", args: list[Any] | None = None
                  ) -> list[dict[str, Any]]:
    """Feedback rows with ``ts <= until`` (and ``where``), in (ts, id) order."""
    return evidence_repo(source).feedback(until, where=where, args=args or [])


def _wanted(model_version: Any) -> frozenset[str] | None:
    if model_version is None:
        return None
    if isinstance(model_version, str | int):
        return frozenset({str(model_version)})
    return frozenset(str(v) for v in model_version)


def labelled(source: EvidenceSource, now: float, model_version: Any = None, since: float | None = None
             ) -> list[Labelled]:
    """All labelled alerts and owner-reported misses as of ``now``.

    ``model_version`` (one version or a collection of aliases, e.g. ``{"3", sha256[:12]}``)
    filters on the alert's (or the feedback's) model version; ``since`` keeps alerts with
    ``ts >= since``. Feedback after ``now`` is ignored, so evaluation is reproducible.
    """
    repo = evidence_repo(source)
    # since: feedback on an alert never precedes it
    alerts = {a["alert_id"]: a for a in repo.alerts(since)}
    fbs = repo.feedback(now, EXPLICIT_ACTIONS, since)
    latest: dict[str, dict[str, Any]] = {}
    orphans: list[dict[str, Any]] = []
    for fb in fbs:
        if fb.get("alert_id"):
            latest[fb["alert_id"]] = fb  # ordered by ts, id: the last one wins
        else:
            orphans.append(fb)
    want = _wanted(model_version)
    out: list[Labelled] = []
    for alert_id, fb in latest.items():
        a = alerts.get(alert_id)
        if a is None:
            if since is None:
                logger.warning("evidence.feedback_without_alert", extra={"alert_id": alert_id,
                                                                        "feedback_id": fb["id"]})
            continue
        if a["ts"] > now:
            continue
        item = _from_alert(parse_alert(a), fb)
        if want is not None and item.model_version not in want:
            continue
        if since is not None and item.ts < since:
            continue
        out.append(item)
    for fb in orphans:
        if classify(False, fb["action"], fb.get("label") or "") != "miss":
            continue
        if want is not None and version_key(fb.get("model_version")) not in want:
            continue
        if since is not None and fb["ts"] < since:
            continue
        out.append(Labelled(
            outcome="miss", alert_id=None, device_id=fb.get("device_id") or "",
            individual_id=fb.get("individual_id") or "", seq=None, ts=fb["ts"],
            model_version=version_key(fb.get("model_version")), detector_version=None,
            notified=False, severity=None, score=None, metrics=(), feedback_id=fb["id"],
            feedback_action=fb["action"], feedback_label=fb.get("label") or "",
            feedback_ts=fb["ts"]))
    out.sort(key=lambda x: (x.ts, x.feedback_id))
    return out


def _from_alert(a: dict[str, Any], fb: dict[str, Any]) -> Labelled:
    notified = is_notified(a)
    return Labelled(
        outcome=classify(notified, fb["action"], fb.get("label") or ""),
        alert_id=a["alert_id"], device_id=a.get("device_id") or "",
        individual_id=a.get("individual_id") or "", seq=a.get("seq"), ts=a["ts"],
        model_version=version_key(a.get("model_version") or fb.get("model_version")),
        detector_version=version_key(a.get("detector_version")), notified=notified,
        severity=a.get("severity"), score=a.get("score"),
        metrics=tuple(str(m) for m in a["metrics"]) if isinstance(a.get("metrics"), list) else (),
        feedback_id=fb["id"], feedback_action=fb["action"], feedback_label=fb.get("label") or "",
        feedback_ts=fb["ts"], alert=a)


def precision_counts(items: list[Labelled]) -> tuple[int, int]:
    """(true positives, false positives) among notified, labelled alerts."""
    tp = sum(1 for i in items if i.outcome == "tp")
    fp = sum(1 for i in items if i.outcome == "fp")
    return tp, fp
