"""Staged rollout: a state machine per rollout, pure logic over the store.

Rollout states: ``shadow`` -> ``canary`` -> ``fleet`` -> ``completed``; on a regression
``halted`` (rollback commands out) -> ``rolled_back``. Per device: ``pending`` ->
``installed_shadow`` -> ``promoted``, or ``rolled_back`` / ``failed``; ``outstanding`` names the
command awaiting the device's reply.

Cohorts come from ``sha256(salt:device_id)`` as a fraction in [0, 1): below ``canary_percent``
-> cohort ``canary``, below ``shadow_percent`` -> ``shadow``, else ``fleet``. The shadow stage
installs the candidate in shadow on canary+shadow devices (no effect on owners); the canary stage
promotes it on canary devices; the fleet stage installs and promotes everywhere.

Quality gates (canary and fleet stages) compare the *candidate group* (promoted devices, alerts
since their promotion) with the *control group* (devices of the rollout not promoted, alerts since
the canary stage began; in the fleet stage, the control measured at the end of the canary stage
when the live control has too little evidence): precision from feedback, notified alerts per
device-day, ignored / notified. Install health (failed or unacknowledged steps) is gated in every
stage. A breach halts the rollout and rolls back every device that installed or promoted it.

``RolloutManager.tick(now)`` returns :class:`DeviceAction` values for the aggregator to sign and
publish; ``on_reply`` feeds the devices' replies back. Every transition, command, reply and
timeout is stored in ``rollout_events`` with its reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud.regression.check import ReleaseRef, passed_check_id
from cloud.regression.evidence import DAY, EXPLICIT_ACTIONS, classify, is_notified
from cloud.releases.config import LimitsConfig, RolloutConfig, StageConfig
from cloud.releases.errors import (
    NoDevicesError,
    ReleaseNotCheckedError,
    RolloutConflictError,
    RolloutNotFoundError,
)
from cloud.store.db import CloudStore
from cloud.store.rollouts import RolloutRepository
from shared.schemas import Reply

logger = logging.getLogger(__name__)
HOUR = 3600.0
ACTIVE = ("shadow", "canary", "fleet", "halted")
COMMANDS = ("install_shadow", "promote", "rollback")


@dataclass(frozen=True)
class DeviceAction:
    """One command for the aggregator to sign and publish: ``(device_id, command_name, args)``.

    ``args``: ``rollout_id``, ``name``, ``version``; ``install_shadow`` adds ``sha256`` and
    ``bundle_path`` (the aggregator delivers those bytes); ``rollback`` adds ``promoted`` (a
    hint: true when the device was told to promote). A rollback is also sent to devices whose
    install/promote failed or went unanswered, so the device must undo only what holds this
    name/version: active -> restore the previous model, shadow -> discard it, neither -> reply ok.
    """

    device_id: str
    command_name: str
    args: dict[str, Any] = field(default_factory=dict)
    command_id: str = ""  # "rollout.<id>.<command>.<attempt>": use it as Command.command_id


def parse_command_id(command_id: str) -> tuple[int, str] | None:
    """(rollout id, command name) from a command id made by the rollout, else None."""
    parts = command_id.split(".")
    if len(parts) != 4 or parts[0] != "rollout" or parts[2] not in COMMANDS or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2]


def cohort_fraction(device_id: str, salt: str) -> float:
    """A stable fraction in [0, 1) from the device id."""
    h = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def cohort_of(device_id: str, config: RolloutConfig) -> str:
    f = cohort_fraction(device_id, config.cohorts.salt) * 100
    if f < config.cohorts.canary_percent:
        return "canary"
    return "shadow" if f < config.cohorts.shadow_percent else "fleet"


@dataclass(frozen=True)
class GroupMetrics:
    devices: int
    device_days: float
    notified: int
    tp: int
    fp: int
    ignored: int

    @property
    def labelled(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> float | None:
        return self.tp / self.labelled if self.labelled else None

    @property
    def alert_rate(self) -> float | None:
        return self.notified / self.device_days if self.device_days > 0 else None

    @property
    def ignore_rate(self) -> float | None:
        return self.ignored / self.notified if self.notified else None

    def to_json(self) -> dict[str, Any]:
        return {"devices": self.devices, "device_days": round(self.device_days, 4),
                "notified": self.notified, "tp": self.tp, "fp": self.fp, "ignored": self.ignored,
                "precision": self.precision, "alert_rate": self.alert_rate,
                "ignore_rate": self.ignore_rate}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GroupMetrics:
        return cls(int(d["devices"]), float(d["device_days"]), int(d["notified"]), int(d["tp"]),
                   int(d["fp"]), int(d["ignored"]))


def group_metrics(store: CloudStore, since: Mapping[str, float], now: float) -> GroupMetrics:
    """Quality of a group of devices, each counted from its own start time up to ``now``:
    notified alerts, their outcomes by the latest explicit feedback (as in
    ``cloud.regression.evidence``) and how many were ignored."""
    if not since:
        return GroupMetrics(0, 0.0, 0, 0, 0, 0)
    lo = min(since.values())
    repo = RolloutRepository(store.backend)
    notified = {a["alert_id"] for a in repo.alerts_between(lo, now)
                if a["device_id"] in since and a["ts"] >= since[a["device_id"]] and is_notified(a)}
    latest: dict[str, dict[str, Any]] = {}
    ignored: set[str] = set()
    for f in repo.feedback_between(lo, now):
        if f["alert_id"] not in notified:
            continue
        if f["action"] == "ignored":
            ignored.add(f["alert_id"])
        elif f["action"] in EXPLICIT_ACTIONS:
            latest[f["alert_id"]] = f  # ordered by ts, id: the last one wins
    outcomes = [classify(True, f["action"], f.get("label") or "") for f in latest.values()]
    days = sum(max(0.0, now - t) for t in since.values()) / DAY
    return GroupMetrics(len(since), days, len(notified), outcomes.count("tp"), outcomes.count("fp"),
                        len(ignored))


def quality_breaches(cand: GroupMetrics, ctrl: GroupMetrics, lim: LimitsConfig) -> list[str]:
    """Reasons the candidate group is worse than control beyond the limits (empty: fine)."""
    out: list[str] = []
    if cand.labelled >= lim.min_labelled and ctrl.labelled >= lim.min_labelled:
        drop = (ctrl.precision or 0.0) - (cand.precision or 0.0)
        if drop > lim.max_precision_drop:
            out.append(f"precision {cand.precision:.3f} ({cand.tp}/{cand.labelled}) vs control "
                       f"{ctrl.precision:.3f} ({ctrl.tp}/{ctrl.labelled}): drop {drop:.3f} > "
                       f"{lim.max_precision_drop}")
    if (cand.device_days >= lim.min_device_days_for_rates
            and ctrl.device_days >= lim.min_device_days_for_rates
            and cand.notified >= lim.min_alerts_for_rates):
        cr, kr = cand.alert_rate or 0.0, max(ctrl.alert_rate or 0.0, lim.alert_rate_floor)
        if cr > lim.max_alert_rate_ratio * kr:
            out.append(f"alert rate {cr:.3f}/device-day vs control {kr:.3f}: ratio {cr / kr:.2f} > "
                       f"{lim.max_alert_rate_ratio}")
    if cand.notified >= lim.min_notified_for_ignore and ctrl.notified >= lim.min_notified_for_ignore:
        rise = (cand.ignore_rate or 0.0) - (ctrl.ignore_rate or 0.0)
        if rise > lim.max_ignore_rate_increase:
            out.append(f"ignore rate {cand.ignore_rate:.3f} vs control {ctrl.ignore_rate:.3f}: rise "
                       f"{rise:.3f} > {lim.max_ignore_rate_increase}")
    return out


def register_release(store: CloudStore, ref: ReleaseRef, *, status: str, now: float,
                     detector_config: Mapping[str, Any] | None = None, bundle_path: str = "",
                     rollout_id: int | None = None) -> None:
    """Record a release (``candidate``, ``fleet``, ``superseded``, ``rolled_back``)."""
    RolloutRepository(store.backend).save_release({
        "name": ref.name, "version": str(ref.version), "sha256": ref.sha256,
        "detector_config": json.dumps(dict(detector_config or {})), "bundle_path": bundle_path,
        "status": status, "updated": now, "rollout_id": rollout_id})


def current_release(store: CloudStore, name: str) -> dict[str, Any] | None:
    """The release the fleet runs for ``name`` (status ``fleet``), with its detector config."""
    r = RolloutRepository(store.backend).fleet_release(name)
    if r is None:
        return None
    r["detector_config"] = json.loads(r["detector_config"] or "{}")
    return r


class RolloutManager:
    """Drives every active rollout; no transport, no clock: the caller passes ``now``."""

    def __init__(self, store: CloudStore, config: RolloutConfig | None = None) -> None:
        self.store = store
        self.config = config or RolloutConfig()
        self.repo = RolloutRepository(store.backend)

    # ------------------------------------------------------------------ helpers
    def _event(self, rid: int, now: float, kind: str, reason: str, *, device_id: str | None = None,
               from_state: str | None = None, to_state: str | None = None,
               data: Mapping[str, Any] | None = None) -> None:
        self.repo.add_event({
            "rollout_id": rid, "ts": now, "kind": kind, "device_id": device_id,
            "from_state": from_state, "to_state": to_state, "reason": reason,
            "data": json.dumps(dict(data or {}), default=str)})

    def _rollout(self, rid: int) -> dict[str, Any]:
        ro = self.repo.rollout(rid)
        if ro is None:
            raise RolloutNotFoundError(f"rollout {rid} not found: list rollouts with `edgeloop release status`")
        return ro

    def _devices(self, rid: int) -> list[dict[str, Any]]:
        return self.repo.devices(rid)

    def _set_device(self, rid: int, device_id: str, now: float, **cols: Any) -> None:
        self.repo.update_device(rid, device_id, {**cols, "updated": now})

    def _transition(self, ro: dict[str, Any], to: str, now: float, reason: str,
                    data: Mapping[str, Any] | None = None) -> None:
        upd: dict[str, Any] = {"state": to, "stage_started": now, "updated": now, "reason": reason}
        if to == "canary":
            upd["canary_started"] = now
        self.repo.update_rollout(ro["id"], upd)
        self._event(ro["id"], now, "transition", reason, from_state=ro["state"], to_state=to, data=data)
        logger.info("rollout.transition", extra={"rollout_id": ro["id"], "from_state": ro["state"],
                                                 "to_state": to, "reason": reason})
        ro.update(upd)

    # ------------------------------------------------------------------ start / halt
    def start(self, ref: ReleaseRef, devices: Iterable[str], now: float, *,
              detector_config: Mapping[str, Any] | None = None, bundle_path: str = "") -> int:
        """Start a rollout of a release that passed its release check; returns the rollout id.

        Raises ReleaseNotCheckedError without a passed check for exactly (name, version, sha256,
        ``detector_config``) against the release the fleet runs now,
        RolloutConflictError while another rollout of the same model is active.
        """
        check = passed_check_id(self.store, ref, detector_config)
        if check is None:
            raise ReleaseNotCheckedError(
                f"release {ref.name} v{ref.version} (sha256 {ref.sha256[:12] or '-'}"
                f"{', this detector config' if detector_config is not None else ''}) has no passed "
                "release check: run `edgeloop release check BUNDLE` and fix what it blocks on")
        cur = current_release(self.store, ref.name)
        checked_against = self.repo.check_current_version(check)
        if cur is not None and checked_against != str(cur["version"]):
            raise ReleaseNotCheckedError(
                f"release {ref.name} v{ref.version} was checked against v{checked_against or '-'}, but the "
                f"fleet now runs v{cur['version']}: run `edgeloop release check BUNDLE` again")
        busy = self.repo.active_rollout_of(ref.name, ACTIVE)
        if busy is not None:
            raise RolloutConflictError(
                f"rollout {busy[0]} of {ref.name} v{busy[1]} is still active: wait for it to "
                "complete or halt it before starting another")
        devs = sorted(set(devices))
        if not devs:
            raise NoDevicesError("a rollout needs at least one device, found none: pass the fleet's "
                                 "device ids (or let devices connect once so the cloud knows them)")
        with self.store.backend.transaction():
            rid = self.repo.create_rollout({
                "model_name": ref.name, "version": str(ref.version), "sha256": ref.sha256,
                "bundle_path": bundle_path, "detector_config": json.dumps(dict(detector_config or {})),
                "current_version": cur["version"] if cur else None, "state": "shadow",
                "stage_started": now, "canary_started": None, "created": now, "updated": now,
                "release_check_id": check, "reason": "started", "last_metrics": "{}",
                "control_snapshot": None})
            self.repo.add_devices(
                [{"rollout_id": rid, "device_id": d, "cohort": cohort_of(d, self.config),
                  "state": "pending", "outstanding": None, "sent_at": None, "installed_at": None,
                  "promoted_at": None, "updated": now, "detail": "", "attempts": 0, "failed_step": None}
                 for d in devs])
            register_release(self.store, ref, status="candidate", now=now,
                             detector_config=detector_config, bundle_path=bundle_path, rollout_id=rid)
            counts = {c: sum(1 for d in devs if cohort_of(d, self.config) == c)
                      for c in ("canary", "shadow", "fleet")}
            self._event(rid, now, "transition", f"started after release check {check}; cohorts {counts}",
                        to_state="shadow", data={"cohorts": counts, "release_check_id": check})
        logger.info("rollout.started", extra={"rollout_id": rid, "model": ref.name,
                                              "version": ref.version, "devices": len(devs)})
        return rid

    def halt(self, rollout_id: int, reason: str, now: float) -> None:
        """Halt a rollout by hand; the next tick sends the rollbacks."""
        ro = self._rollout(rollout_id)
        if ro["state"] not in ("shadow", "canary", "fleet"):
            return
        with self.store.backend.transaction():
            self._halt(ro, [f"operator: {reason}"], now, {})

    def promote(self, rollout_id: int, reason: str, now: float) -> tuple[bool, str]:
        """Advance a rollout one stage by hand (shadow -> canary -> fleet); the fleet stage still
        completes on its own evidence. Returns (done, what happened)."""
        ro = self._rollout(rollout_id)
        was = ro["state"]
        nxt = {"shadow": "canary", "canary": "fleet"}.get(was)
        if nxt is None:
            return False, f"rollout {rollout_id} is {was}: only shadow and canary stages can be promoted"
        with self.store.backend.transaction():
            self._transition(ro, nxt, now, f"operator promoted: {reason}")
        return True, f"promoted {was} -> {nxt}"

    def _halt(self, ro: dict[str, Any], reasons: list[str], now: float, metrics: Mapping[str, Any]) -> None:
        self._transition(ro, "halted", now, "HALT: " + "; ".join(reasons), {"metrics": metrics})
        register_release(self.store, ReleaseRef(ro["model_name"], ro["version"], ro["sha256"]),
                         status="rolled_back", now=now, detector_config=json.loads(ro["detector_config"]),
                         bundle_path=ro["bundle_path"], rollout_id=ro["id"])

    # ------------------------------------------------------------------ replies
    def on_reply(self, device_id: str, command_name: str, ok: bool, detail: str, now: float,
                 data: Mapping[str, Any] | None = None) -> bool:
        """Apply a device's reply to its outstanding rollout command; False when none matched
        (a duplicate, a late reply after a timeout, or not a rollout command)."""
        if command_name not in COMMANDS:
            return False
        to = {"install_shadow": "installed_shadow", "promote": "promoted",
              "rollback": "rolled_back"}[command_name] if ok else "failed"
        cols: dict[str, Any] = {"state": to, "outstanding": None, "detail": detail[:500],
                                "failed_step": None if ok else command_name}
        if ok and command_name == "install_shadow":
            cols["installed_at"] = now
        if ok and command_name == "promote":
            cols["promoted_at"] = now
        with self.store.backend.transaction():
            rid = self.repo.device_rollout(device_id, ACTIVE, outstanding=command_name)
            if rid is not None:
                self._set_device(rid, device_id, now, **cols)
                self._event(rid, now, "reply", f"{command_name} {'ok' if ok else 'FAILED'}: {detail}"[:500],
                            device_id=device_id, to_state=to, data=dict(data or {}))
        if rid is None:
            logger.warning("rollout.reply_unmatched", extra={"device_id": device_id,
                                                             "command": command_name, "ok": ok})
            return False
        logger.info("rollout.reply", extra={"rollout_id": rid, "device_id": device_id,
                                            "command": command_name, "ok": ok})
        return True

    def handle_reply(self, reply: Reply, now: float) -> bool:
        """A decoded ``Reply`` to a rollout command (``command_id`` from :class:`DeviceAction`);
        False when the reply is not for a rollout command or matched nothing outstanding."""
        parsed = parse_command_id(reply.command_id)
        if parsed is None:
            return False
        return self.on_reply(reply.device_id, parsed[1], reply.ok, reply.detail, now, reply.data)

    def on_summary(self, device_id: str, body: Mapping[str, Any], now: float) -> None:
        """Hook for stored daily summaries: picks up the agent's ``shadow`` counters, if any."""
        shadow = body.get("shadow")
        if isinstance(shadow, Mapping) and shadow:
            self.record_shadow_stats(device_id, shadow, now)

    def record_shadow_stats(self, device_id: str, summary: Mapping[str, Any], now: float) -> None:
        """Store a device's cumulative shadow agreement for its active rollout: a ShadowStats
        summary (``windows``, ``agree``) or the agent's daily-summary ``shadow`` counter
        (``agree``, ``disagree``)."""
        rid = self.repo.device_rollout(device_id, ("shadow", "canary", "fleet"))
        if rid is None:
            return
        agree = int(summary.get("agree", 0) or 0)
        windows = int(summary.get("windows", agree + int(summary.get("disagree", 0) or 0)) or 0)
        self.repo.save_shadow_stats(rid, device_id, windows, min(agree, windows), now)

    # ------------------------------------------------------------------ tick
    def tick(self, now: float) -> list[DeviceAction]:
        """Advance every active rollout once; returns the commands to publish."""
        actions: list[DeviceAction] = []
        for rid in self.repo.rollout_ids(ACTIVE):
            with self.store.backend.transaction():
                actions += self._tick_one(self._rollout(rid), now)
        return actions

    def _tick_one(self, ro: dict[str, Any], now: float) -> list[DeviceAction]:
        rid = ro["id"]
        lim = self.config.limits
        for d in self._devices(rid):
            if d["outstanding"] and now - (d["sent_at"] or now) > lim.ack_timeout_hours * HOUR:
                why = f"no reply to {d['outstanding']} within {lim.ack_timeout_hours:g} h"
                self._set_device(rid, d["device_id"], now, state="failed", outstanding=None, detail=why,
                                 failed_step=d["outstanding"])
                self._event(rid, now, "timeout", why, device_id=d["device_id"], to_state="failed")
        devices = self._devices(rid)
        if ro["state"] != "halted":
            metrics = self._metrics(ro, devices, now)
            self.repo.update_rollout(rid, {"last_metrics": json.dumps(metrics, default=str), "updated": now})
            reasons = self._breaches(ro, metrics)
            if reasons:
                self._halt(ro, reasons, now, metrics)
        if ro["state"] == "halted":
            return self._rollback_step(ro, devices, now)
        actions = self._forward(ro, devices, now)
        if not actions:
            self._maybe_advance(ro, self._devices(rid), now)
            if ro["state"] in ("canary", "fleet"):
                actions = self._forward(ro, self._devices(rid), now)
        return actions

    def _metrics(self, ro: dict[str, Any], devices: list[dict[str, Any]], now: float) -> dict[str, Any]:
        sent = [d for d in devices if d["attempts"]]
        failed = [d["device_id"] for d in devices if d["state"] == "failed"]
        shadow_days = sum(max(0.0, now - d["installed_at"]) for d in devices
                          if d["installed_at"] and d["state"] in ("installed_shadow", "promoted")) / DAY
        sh = self.repo.shadow_totals(ro["id"])
        m: dict[str, Any] = {"sent": len(sent), "failed": len(failed), "failed_devices": failed[:20],
                             "shadow_device_days": shadow_days, "shadow_windows": sh[0],
                             "shadow_agreement": sh[1] / sh[0] if sh[0] else None}
        if ro["canary_started"] is not None:
            cand = {d["device_id"]: d["promoted_at"] for d in devices
                    if d["state"] == "promoted" and d["promoted_at"] is not None}
            ctrl = {d["device_id"]: ro["canary_started"] for d in devices if d["device_id"] not in cand
                    and d["state"] != "failed"}
            m["candidate"] = group_metrics(self.store, cand, now).to_json()
            m["control"] = group_metrics(self.store, ctrl, now).to_json()
        return m

    def _breaches(self, ro: dict[str, Any], m: dict[str, Any]) -> list[str]:
        lim = self.config.limits
        out = []
        if m["failed"] > lim.max_failed_installs:
            out.append(f"{m['failed']} devices failed a step (limit {lim.max_failed_installs}): "
                       f"{', '.join(m['failed_devices'])}")
        elif m["sent"] >= lim.min_sent_for_fraction and m["failed"] / m["sent"] > lim.max_failed_fraction:
            out.append(f"{m['failed']}/{m['sent']} devices failed a step (> {lim.max_failed_fraction:.0%})")
        if (lim.min_shadow_agreement > 0 and m["shadow_windows"] >= lim.min_shadow_windows
                and m["shadow_agreement"] < lim.min_shadow_agreement):
            out.append(f"shadow agreement {m['shadow_agreement']:.3f} over {m['shadow_windows']} windows "
                       f"< {lim.min_shadow_agreement}")
        if "candidate" in m:
            cand = GroupMetrics.from_json(m["candidate"])
            ctrl = GroupMetrics.from_json(m["control"])
            snap = ro.get("control_snapshot")
            if ro["state"] == "fleet" and snap and ctrl.labelled < lim.min_labelled:
                ctrl = GroupMetrics.from_json(json.loads(snap))
            out += quality_breaches(cand, ctrl, lim)
        return out

    def _wants(self, stage: str, cohort: str) -> tuple[bool, bool]:
        """(install in shadow?, promote?) for a device of ``cohort`` in ``stage``."""
        if stage == "shadow":
            return cohort in ("canary", "shadow"), False
        if stage == "canary":
            return cohort in ("canary", "shadow"), cohort == "canary"
        return True, True

    def _args(self, ro: dict[str, Any], command: str, **extra: Any) -> dict[str, Any]:
        args = {"rollout_id": ro["id"], "name": ro["model_name"], "version": ro["version"], **extra}
        if command == "install_shadow":
            args.update(sha256=ro["sha256"], bundle_path=ro["bundle_path"])
        return args

    def _send(self, ro: dict[str, Any], d: dict[str, Any], command: str, now: float,
              **extra: Any) -> DeviceAction:
        attempt = (d["attempts"] or 0) + 1
        cid = f"rollout.{ro['id']}.{command}.{attempt}"
        self._set_device(ro["id"], d["device_id"], now, outstanding=command, sent_at=now,
                         attempts=attempt)
        self._event(ro["id"], now, "command", f"{command} sent", device_id=d["device_id"],
                    data={"command": command, "command_id": cid})
        return DeviceAction(d["device_id"], command, self._args(ro, command, **extra), cid)

    def _forward(self, ro: dict[str, Any], devices: list[dict[str, Any]], now: float) -> list[DeviceAction]:
        out = []
        for d in devices:
            if d["outstanding"]:
                continue
            install, promote = self._wants(ro["state"], d["cohort"])
            if d["state"] == "pending" and install:
                out.append(self._send(ro, d, "install_shadow", now))
            elif d["state"] == "installed_shadow" and promote:
                out.append(self._send(ro, d, "promote", now))
        return out

    def _maybe_advance(self, ro: dict[str, Any], devices: list[dict[str, Any]], now: float) -> None:
        stage = ro["state"]
        cfg: StageConfig = getattr(self.config.stages, stage)
        m = json.loads(self.repo.last_metrics(ro["id"]) or "{}")
        waiting = [d for d in devices if d["outstanding"] or (
            d["state"] == "pending" and self._wants(stage, d["cohort"])[0]) or (
            d["state"] == "installed_shadow" and self._wants(stage, d["cohort"])[1])]
        hours = (now - ro["stage_started"]) / HOUR
        if stage == "shadow":
            days, alerts = m.get("shadow_device_days", 0.0), 0
        else:
            cand = m.get("candidate") or {}
            days, alerts = cand.get("device_days", 0.0), cand.get("notified", 0)
        missing = []
        if waiting:
            missing.append(f"{len(waiting)} devices still acting")
        if hours < cfg.min_hours:
            missing.append(f"{hours:.1f}/{cfg.min_hours:g} h")
        if days < cfg.min_device_days:
            missing.append(f"{days:.2f}/{cfg.min_device_days:g} device-days")
        if alerts < cfg.min_alerts:
            missing.append(f"{alerts}/{cfg.min_alerts} alerts")
        if missing:
            if cfg.max_hours and hours > cfg.max_hours:
                self._halt(ro, [f"{stage} stage ran {hours:.0f} h > max_hours {cfg.max_hours:g} without its "
                                f"evidence ({', '.join(missing)})"], now, m)
            return
        evidence = (f"{hours:.1f} h >= {cfg.min_hours:g}, {days:.2f} device-days >= "
                    f"{cfg.min_device_days:g}, {alerts} alerts >= {cfg.min_alerts}, no limit breached")
        nxt = {"shadow": "canary", "canary": "fleet", "fleet": "completed"}[stage]
        if stage == "canary" and "control" in m:
            self.repo.update_rollout(ro["id"], {"control_snapshot": json.dumps(m["control"])})
            ro["control_snapshot"] = json.dumps(m["control"])
        self._transition(ro, nxt, now, f"{stage} stage passed: {evidence}", {"metrics": m})
        if nxt == "completed":
            ref = ReleaseRef(ro["model_name"], ro["version"], ro["sha256"])
            self.repo.supersede_fleet(ro["model_name"], ro["version"], now)
            register_release(self.store, ref, status="fleet", now=now,
                             detector_config=json.loads(ro["detector_config"]),
                             bundle_path=ro["bundle_path"], rollout_id=ro["id"])

    def _rollback_step(self, ro: dict[str, Any], devices: list[dict[str, Any]], now: float) -> list[DeviceAction]:
        out = []
        for d in devices:
            if d["outstanding"] == "rollback":
                continue
            # a failed or unanswered install/promote may still have happened on the device
            touched = d["state"] in ("installed_shadow", "promoted") or d["outstanding"] in (
                "install_shadow", "promote") or (d["state"] == "failed" and d["failed_step"] in (
                    "install_shadow", "promote"))
            if touched:
                promoted = d["state"] == "promoted" or "promote" in (d["outstanding"], d["failed_step"])
                out.append(self._send(ro, d, "rollback", now, promoted=promoted))
        if not out and not any(d["outstanding"] == "rollback" for d in devices):
            n = sum(1 for d in devices if d["state"] == "rolled_back")
            self._transition(ro, "rolled_back", now,
                             f"rollback finished: {n} devices rolled back, "
                             f"{sum(1 for d in devices if d['state'] == 'failed')} failed")
        return out


def rollout_ids(store: CloudStore, states: Sequence[str] | None = None) -> list[int]:
    """Ids of the store's rollouts (in one of ``states``, when given), oldest first."""
    return RolloutRepository(store.backend).rollout_ids(states)
