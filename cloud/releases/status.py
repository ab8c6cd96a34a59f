"""Queryable rollout state: ``rollout_status`` (a dict) and ``format_rollout_table`` (text)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from cloud.releases.errors import RolloutNotFoundError
from cloud.store.db import CloudStore
from cloud.store.rollouts import RolloutRepository


def rollout_status(store: CloudStore, rollout_id: int, *, events: int = 50) -> dict[str, Any]:
    """Everything about one rollout: release, state, device counts per cohort and state,
    outstanding commands, the latest metrics, every transition with its reason and the last
    ``events`` events of any kind (commands, replies, timeouts; newest last)."""
    repo = RolloutRepository(store.backend)
    ro = repo.rollout(rollout_id)
    if ro is None:
        raise RolloutNotFoundError(f"rollout {rollout_id} not found: list rollouts with `edgeloop release status`")
    devs = repo.devices(rollout_id)
    by_cohort: dict[str, dict[str, int]] = {}
    for c in ("canary", "shadow", "fleet"):
        by_cohort[c] = dict(Counter(d["state"] for d in devs if d["cohort"] == c))
    ev = [dict(r, data=json.loads(r["data"] or "{}")) for r in repo.events(rollout_id, events)]
    return {
        "id": ro["id"], "model_name": ro["model_name"], "version": ro["version"],
        "sha256": ro["sha256"], "current_version": ro["current_version"], "state": ro["state"],
        "reason": ro["reason"], "created": ro["created"], "stage_started": ro["stage_started"],
        "updated": ro["updated"], "release_check_id": ro["release_check_id"],
        "devices": len(devs), "device_states": dict(Counter(d["state"] for d in devs)),
        "by_cohort": by_cohort,
        "outstanding": dict(Counter(d["outstanding"] for d in devs if d["outstanding"])),
        "metrics": json.loads(ro["last_metrics"] or "{}"),
        "transitions": [dict(r, data=json.loads(r["data"] or "{}")) for r in repo.transitions(rollout_id)],
        "events": ev,
    }


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_rollout_table(statuses: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> str:
    """One line per rollout (state, devices per state, candidate vs control quality, reason)."""
    items = [statuses] if isinstance(statuses, Mapping) else list(statuses)
    head = (f"{'id':>4}  {'model':<12} {'ver':>5} {'state':<11} {'devices':>7}  {'pend':>4} {'shad':>4} "
            f"{'prom':>4} {'back':>4} {'fail':>4}  {'prec c/k':<11} {'rate c/k':<11} reason")
    lines = [head, "-" * len(head)]
    for s in items:
        st = s["device_states"]
        m = s.get("metrics") or {}
        c, k = m.get("candidate") or {}, m.get("control") or {}
        prec = f"{_fmt(c.get('precision'), '.2f')}/{_fmt(k.get('precision'), '.2f')}"
        rate = f"{_fmt(c.get('alert_rate'), '.2f')}/{_fmt(k.get('alert_rate'), '.2f')}"
        lines.append(
            f"{s['id']:>4}  {s['model_name'][:12]:<12} {str(s['version'])[:5]:>5} {s['state']:<11} "
            f"{s['devices']:>7}  {st.get('pending', 0):>4} {st.get('installed_shadow', 0):>4} "
            f"{st.get('promoted', 0):>4} {st.get('rolled_back', 0):>4} {st.get('failed', 0):>4}  "
            f"{prec:<11} {rate:<11} {(s.get('reason') or '')[:120]}")
    return "\n".join(lines)
