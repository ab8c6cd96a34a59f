"""Retraining rules, evaluated on a schedule: ``evaluate_retrain_rules(store, rules, now)``.

Rules apply to the *current* version of a model: the version its last completed fleet rollout
installed (``releases`` table), else the newest ``model_version`` seen on alerts up to ``now``.

A rule whose condition holds records a request in ``retrain_requests`` (model, version, rule,
reason with the measured values against the thresholds, dataset path) and exports the dataset.
After a request, the same rule and model version fires again only when the condition holds again
*and* there is new evidence after the previous request (labelled alerts for ``precision``, new
cases for ``new_cases`` (the condition itself counts only those), summaries for ``drift``) *and*
``cooldown_days`` have passed. Every evaluation, fired or not, is logged in ``retrain_evaluations``
with its outcome (fired, not_met, no_new_evidence, cooldown, no_model) and reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.regression.cases import RegressionConfig, capture_cases
from cloud.regression.evidence import (
    DAY,
    Labelled,
    labelled,
    precision_counts,
    version_key,
)
from cloud.retrain.config import DriftRule, NewCasesRule, PrecisionRule, RetrainConfig, Rule
from cloud.retrain.dataset import export_dataset
from cloud.retrain.drift import ks_pvalue, psi, summary_values
from cloud.store.db import CloudStore
from cloud.store.retrain import RetrainRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainRequest:
    id: int
    model_name: str
    model_version: str
    rule: str
    kind: str
    reason: str
    measured: dict[str, Any]
    created: float
    dataset_path: str
    status: str = "open"


@dataclass(frozen=True)
class _Eval:
    holds: bool
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)
    new_evidence: int | None = None  # evidence after the previous request (None: not applicable)
    needed: int = 0


def current_model_version(store: CloudStore, model_name: str, now: float) -> str | None:
    """The version the fleet runs: last completed rollout, else the newest on alerts."""
    repo = RetrainRepository(store.backend)
    fleet = repo.fleet_version(model_name)
    if fleet is not None:
        return version_key(fleet)
    return version_key(repo.newest_alert_version(now))


def model_aliases(store: CloudStore, model_name: str, version: str) -> frozenset[str]:
    """The strings alerts may carry for this model version: the version itself and, for a
    registered release, its model sha256 and 12-character prefix (what the device agent reports),
    unless another release of the model has the same model file (then the hash is ambiguous)."""
    out = {version}
    repo = RetrainRepository(store.backend)
    sha = repo.release_sha256(model_name, version)
    if sha is not None and not repo.other_releases_with_sha256(model_name, sha, version):
        out |= {sha, sha[:12]}
    return frozenset(out)


def _precision(store: CloudStore, rule: PrecisionRule, version: str, now: float,
               last: float | None, evidence: list[Labelled]) -> _Eval:
    since = now - rule.window_days * DAY
    aliases = model_aliases(store, rule.model_name, version)
    items = [i for i in evidence if i.outcome in ("tp", "fp") and i.model_version in aliases
             and i.ts >= since]
    tp, fp = precision_counts(items)
    n = tp + fp
    prec = tp / n if n else None
    m = {"precision": prec, "tp": tp, "fp": fp, "labelled": n, "min_precision": rule.min_precision,
         "min_labelled": rule.min_labelled, "window_days": rule.window_days}
    holds = n >= rule.min_labelled and prec is not None and prec < rule.min_precision
    ptxt = "n/a" if prec is None else f"{prec:.3f}"
    reason = (f"precision {ptxt} {'<' if holds else 'not <'} {rule.min_precision} over {n} labelled "
              f"alerts (need >= {rule.min_labelled}) in the last {rule.window_days:g} days")
    new = None if last is None else sum(1 for i in items if i.feedback_ts > last)
    m["new_labelled"] = new
    return _Eval(holds, reason, m, new, rule.min_new_evidence)


def _new_cases(store: CloudStore, rule: NewCasesRule, version: str, now: float,
               last: float | None, evidence: list[Labelled]) -> _Eval:
    aliases = model_aliases(store, rule.model_name, version)
    items = [i for i in evidence if i.case_kind in rule.case_kinds and i.model_version in aliases
             and (last is None or i.feedback_ts > last)]
    by_kind = {k: sum(1 for i in items if i.case_kind == k) for k in rule.case_kinds}
    n = len(items)
    holds = n >= rule.count
    after = "since the previous request" if last is not None else "on this model version"
    reason = (f"{n} confirmed {'/'.join(rule.case_kinds)} cases {after} "
              f"({', '.join(f'{k}={v}' for k, v in by_kind.items())}); threshold {rule.count}")
    return _Eval(holds, reason, {"cases": n, "by_kind": by_kind, "count": rule.count,
                                 "since": last}, None)


def _summaries(store: CloudStore, lo: float, hi: float, min_minutes: float = 0.0
               ) -> list[tuple[float, dict[str, float]]]:
    rows = RetrainRepository(store.backend).summaries(lo, hi)
    out = [(r["ts"], summary_values(json.loads(r["body"]))) for r in rows]
    return [(ts, v) for ts, v in out if v.get("minutes", min_minutes) >= min_minutes]


def _drift(store: CloudStore, rule: DriftRule, version: str, now: float, last: float | None,
           evidence: list[Labelled]) -> _Eval:
    split = now - rule.window_days * DAY
    ref_ts = [(ts, v) for ts, v in _summaries(store, split - rule.reference_days * DAY, split,
                                              rule.min_day_minutes) if ts < split]
    ref_days = len({int(ts // DAY) for ts, _ in ref_ts})
    if ref_days < rule.min_reference_days:
        return _Eval(False, f"reference too short: summaries of {ref_days} days before the last "
                     f"{rule.window_days:g} (need >= {rule.min_reference_days:g})",
                     {"reference_days": ref_days, "method": rule.method}, None, rule.min_samples)
    ref_rows = [v for _, v in ref_ts]
    cur_rows = _summaries(store, split, now, rule.min_day_minutes)
    names = list(rule.metrics) or sorted({k for v in ref_rows for k in v})
    per: dict[str, Any] = {}
    flagged: list[str] = []
    for name in names:
        ref = [v[name] for v in ref_rows if name in v]
        cur = [v[name] for _, v in cur_rows if name in v]
        if len(ref) < rule.min_samples or len(cur) < rule.min_samples:
            per[name] = {"reference_n": len(ref), "recent_n": len(cur), "tested": False}
            continue
        p = psi(ref, cur, rule.bins)
        stat, pv = ks_pvalue(ref, cur)
        tests = {"psi": p >= rule.psi_threshold, "ks": pv < rule.ks_alpha}
        drift = {"psi": tests["psi"], "ks": tests["ks"], "either": any(tests.values()),
                 "both": all(tests.values())}[rule.method]
        per[name] = {"reference_n": len(ref), "recent_n": len(cur), "tested": True, "psi": p,
                     "ks_stat": stat, "ks_p": pv, "drift": drift}
        if drift:
            flagged.append(f"{name} (psi {p:.3f} vs {rule.psi_threshold}, ks p {pv:.2g} vs {rule.ks_alpha})")
    tested = [n for n, v in per.items() if v["tested"]]
    if flagged:
        reason = f"drift ({rule.method}) in {len(flagged)}/{len(tested)} metrics: " + "; ".join(flagged)
    elif tested:
        reason = f"no drift ({rule.method}) in {len(tested)} tested metrics"
    else:
        reason = f"no metric has >= {rule.min_samples} summaries in both periods"
    new = None if last is None else sum(1 for ts, _ in cur_rows if ts > last)
    return _Eval(bool(flagged), reason, {"metrics": per, "method": rule.method, "new_summaries": new},
                 new, rule.min_samples)


_EVALUATORS = {"precision": _precision, "new_cases": _new_cases, "drift": _drift}


def _eval_row(now: float, rule: Rule, version: str | None, outcome: str, reason: str,
              measured: dict[str, Any]) -> dict[str, Any]:
    return {"ts": now, "rule": rule.name, "model_name": rule.model_name, "model_version": version,
            "outcome": outcome, "reason": reason, "measured": json.dumps(measured, default=str),
            "request_id": None}


def _dataset_dir(root: Path, rule: Rule, version: str, now: float) -> Path:
    base = root / f"{rule.model_name}-v{version}-{rule.name}-{int(now)}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}.{i}"), i + 1
    return path


def evaluate_retrain_rules(store: CloudStore, rules: RetrainConfig | Sequence[Rule], now: float, *,
                           model_version: str | int | None = None,
                           export_dir: str | Path | None = None,
                           regression: RegressionConfig | None = None) -> list[RetrainRequest]:
    """Evaluate every rule once at ``now``; returns the requests that fired.

    Call it from a scheduler (e.g. hourly), never per data point. It first captures new regression
    cases (idempotent) so that exported datasets include them. ``model_version`` overrides the
    current-version lookup for every rule.
    """
    if isinstance(rules, RetrainConfig):
        cfg_rules: Sequence[Rule] = rules.rules
        root = Path(export_dir) if export_dir is not None else rules.export.dir
        regression = regression or rules.regression
    else:
        cfg_rules = rules
        root = Path(export_dir) if export_dir is not None else Path("var/retrain")
    evidence = labelled(store, now)  # once per evaluation; each rule filters it
    capture_cases(store, now, regression, items=evidence)
    repo = RetrainRepository(store.backend)
    fired: list[RetrainRequest] = []
    for rule in cfg_rules:
        version = version_key(model_version) or current_model_version(store, rule.model_name, now)
        if version is None:
            repo.add_evaluation(_eval_row(
                now, rule, None, "no_model",
                f"no current version of model {rule.model_name!r} (no fleet release, no alerts)", {}))
            continue
        last = repo.last_request(rule.name, rule.model_name, version)
        ev = _EVALUATORS[rule.kind](store, rule, version, now, last, evidence)  # type: ignore[operator]
        outcome = "fired"
        reason = ev.reason
        if not ev.holds:
            outcome = "not_met"
        elif last is not None and now - last < rule.cooldown_days * DAY:
            outcome = "cooldown"
            reason += (f"; suppressed: cooldown {rule.cooldown_days:g} days since the previous request "
                       f"({(now - last) / DAY:.2f} days ago)")
        elif last is not None and ev.new_evidence is not None and ev.new_evidence < ev.needed:
            outcome = "no_new_evidence"
            reason += (f"; suppressed: {ev.new_evidence} new items since the previous request, "
                       f"need {ev.needed}")
        if outcome != "fired":
            repo.add_evaluation(_eval_row(now, rule, version, outcome, reason, ev.measured))
            logger.debug("retrain.rule_not_fired", extra={"rule": rule.name, "outcome": outcome,
                                                          "reason": reason})
            continue
        reason = f"rule {rule.name} ({rule.kind}) on {rule.model_name} v{version}: {reason}"
        path = _dataset_dir(root, rule, version, now)
        request_info = {"model_name": rule.model_name, "model_version": version, "rule": rule.name,
                        "kind": rule.kind, "reason": reason, "measured": ev.measured, "created": now}
        export_dataset(store, path, now, request_info, items=evidence)
        rid = repo.add_request({**request_info, "measured": json.dumps(ev.measured, default=str),
                                "dataset_path": str(path), "status": "open"},
                               _eval_row(now, rule, version, "fired", reason, ev.measured))
        logger.info("retrain.request_recorded", extra={"request_id": rid, "rule": rule.name,
                                                       "model_version": version, "reason": reason})
        fired.append(RetrainRequest(rid, rule.model_name, version, rule.name, rule.kind, reason,
                                    ev.measured, now, str(path)))
    return fired


def list_requests(store: CloudStore) -> list[RetrainRequest]:
    """All retraining requests, oldest first."""
    return [RetrainRequest(r["id"], r["model_name"], r["model_version"], r["rule"], r["kind"],
                           r["reason"], json.loads(r["measured"]), r["created"], r["dataset_path"],
                           r["status"])
            for r in RetrainRepository(store.backend).requests()]


def evaluations(store: CloudStore, rule: str | None = None) -> list[dict[str, Any]]:
    """The evaluation log (every decision with its reason), oldest first."""
    return [dict(r, measured=json.loads(r["measured"]))
            for r in RetrainRepository(store.backend).evaluations(rule)]
