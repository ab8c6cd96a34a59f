"""Staged rollout: shadow -> canary -> fleet, halts and rollbacks, driven tick by tick (no broker),
on both store back ends (``any_store`` / ``store_url``)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud.regression import ReleaseRef, check_release
from cloud.regression.fixtures import add_alert, add_feedback
from cloud.releases import (
    DeviceAction,
    NoDevicesError,
    ReleaseNotCheckedError,
    RolloutConfig,
    RolloutConflictError,
    RolloutManager,
    cohort_of,
    current_release,
    format_rollout_table,
    load_rollout_config,
    parse_command_id,
    register_release,
    release_check_cli,
    rollout_status,
    rollout_status_cli,
    start_rollout_cli,
)
from cloud.releases.config import LimitsConfig
from cloud.store.db import CloudStore, open_store
from shared import bundles, signing
from shared.config import ConfigError, load
from shared.schemas import Reply

H, D = 3600.0, 86400.0
T0 = 1_800_000_000.0
DEVICES = [f"dev-{i:03d}" for i in range(100)]
V1 = ReleaseRef("collar", "1", "a" * 64)
V2 = ReleaseRef("collar", "2", "b" * 64)


def make(store: CloudStore | None = None, config: RolloutConfig | None = None
         ) -> tuple[CloudStore, RolloutManager]:
    store = store or CloudStore()
    register_release(store, V1, status="fleet", now=T0 - 30 * D, detector_config={"min_score": 0.3})
    check = check_release(store, {"min_score": 0.3}, {"min_score": 0.3}, candidate_ref=V2,
                          current_ref=V1, now=T0)
    assert check.passed
    return store, RolloutManager(store, config or load_rollout_config())


class Sim:
    """Runs ticks; every device replies to every command (``ok`` decides how)."""

    def __init__(self, mgr: RolloutManager, ok: Callable[[DeviceAction], bool] = lambda a: True) -> None:
        self.mgr, self.ok, self.sent = mgr, ok, []  # type: ignore[var-annotated]

    def tick(self, now: float, reply: bool = True) -> list[DeviceAction]:
        actions = self.mgr.tick(now)
        self.sent += actions
        if reply:
            for a in actions:
                good = self.ok(a)
                assert self.mgr.on_reply(a.device_id, a.command_name, good, "ok" if good else "boom", now)
        return actions


def feed_quality(store: CloudStore, devices: list[str], day0: float, days: int, per_day: int,
                 precision: float, version: str, tag: str) -> None:
    """``per_day`` notified alerts per device per day; a ``precision`` share confirmed, the rest dismissed."""
    n = 0
    for k in range(days):
        for d in devices:
            for j in range(per_day):
                ts = day0 + k * D + j * 600 + 60
                aid = f"{tag}-{d}-{k}-{j}"
                add_alert(store, aid, ts, device_id=d, model_version=version)
                good = (n % 10) < round(precision * 10)
                add_feedback(store, aid, "confirm" if good else "dismiss", ts + 300, device_id=d)
                n += 1


def test_cohorts_are_deterministic_nested_and_sized() -> None:
    cfg = RolloutConfig()
    ids = [f"x{i}" for i in range(2000)]
    first = [cohort_of(d, cfg) for d in ids]
    assert first == [cohort_of(d, cfg) for d in ids]
    share = {c: first.count(c) / len(ids) for c in ("canary", "shadow", "fleet")}
    assert 0.07 < share["canary"] < 0.13
    assert 0.07 < share["shadow"] < 0.13  # shadow-only cohort: 20% - 10%
    other = RolloutConfig(cohorts=type(cfg.cohorts)(salt="another"))
    assert [cohort_of(d, other) for d in ids] != first


def test_start_requires_a_passed_release_check_and_one_active_rollout(any_store: CloudStore) -> None:
    store = any_store
    mgr = RolloutManager(store)
    with pytest.raises(ReleaseNotCheckedError, match="no passed release check"):
        mgr.start(V2, DEVICES, T0)
    store, mgr = make(store)
    with pytest.raises(ReleaseNotCheckedError):  # same version, other bytes: not checked
        mgr.start(ReleaseRef("collar", "2", "c" * 64), DEVICES, T0)
    mgr.start(V2, DEVICES, T0)
    with pytest.raises(RolloutConflictError, match="still active"):
        mgr.start(V2, DEVICES, T0 + 1)


def test_better_candidate_reaches_the_whole_fleet(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0, bundle_path="/bundles/collar-2.bundle")
    sim = Sim(mgr)
    first = sim.tick(T0)
    cohorts = {d: cohort_of(d, mgr.config) for d in DEVICES}
    assert {a.command_name for a in first} == {"install_shadow"}
    assert {a.device_id for a in first} == {d for d, c in cohorts.items() if c != "fleet"}
    assert first[0].args["bundle_path"] == "/bundles/collar-2.bundle" and first[0].args["sha256"] == V2.sha256
    assert sim.tick(T0 + 12 * H) == []  # shadow needs 24 h
    assert rollout_status(store, rid)["state"] == "shadow"
    promote = sim.tick(T0 + 25 * H)
    canary = {d for d, c in cohorts.items() if c == "canary"}
    assert rollout_status(store, rid)["state"] == "canary"
    assert {a.device_id for a in promote} == canary and {a.command_name for a in promote} == {"promote"}
    t1 = T0 + 25 * H
    control = [d for d in DEVICES if d not in canary]
    feed_quality(store, sorted(canary), t1, 4, 1, 0.9, "2", "c")
    feed_quality(store, control, t1, 4, 1, 0.8, "1", "k")
    t = t1
    while t < t1 + 5 * D:
        t += 6 * H
        sim.tick(t)
    st = rollout_status(store, rid)
    assert st["state"] == "completed", st["reason"]
    assert st["device_states"] == {"promoted": 100}
    promoted = [a.device_id for a in sim.sent if a.command_name == "promote"]
    assert sorted(promoted) == sorted(DEVICES)  # exactly once each
    assert not [a for a in sim.sent if a.command_name == "rollback"]
    assert current_release(store, "collar")["version"] == "2"
    states = [(e["from_state"], e["to_state"]) for e in st["transitions"]]
    assert states == [(None, "shadow"), ("shadow", "canary"), ("canary", "fleet"), ("fleet", "completed")]
    assert all(e["reason"] for e in st["transitions"])


def test_worse_candidate_is_halted_in_canary_and_rolled_back(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    sim = Sim(mgr)
    sim.tick(T0)
    sim.tick(T0 + 25 * H)
    cohorts = {d: cohort_of(d, mgr.config) for d in DEVICES}
    canary = sorted(d for d, c in cohorts.items() if c == "canary")
    control = [d for d in DEVICES if d not in canary]
    t1 = T0 + 25 * H
    feed_quality(store, canary, t1, 3, 3, 0.3, "2", "c")  # more alerts, mostly dismissed
    feed_quality(store, control, t1, 3, 1, 0.8, "1", "k")
    t = t1
    while t < t1 + 3 * D:
        t += 6 * H
        sim.tick(t)
        if rollout_status(store, rid)["state"] == "rolled_back":
            break
    st = rollout_status(store, rid)
    assert st["state"] == "rolled_back"
    halt = [e for e in st["transitions"] if e["to_state"] == "halted"]
    assert len(halt) == 1 and "precision" in halt[0]["reason"] and "control" in halt[0]["reason"]
    # never beyond the canary cohort
    assert {a.device_id for a in sim.sent if a.command_name == "promote"} == set(canary)
    assert all(cohorts[a.device_id] != "fleet" for a in sim.sent)
    rolled = {a.device_id: a.args["promoted"] for a in sim.sent if a.command_name == "rollback"}
    installed = {a.device_id for a in sim.sent if a.command_name == "install_shadow"}
    assert set(rolled) == installed
    assert all(rolled[d] for d in canary) and not any(rolled[d] for d in installed - set(canary))
    assert current_release(store, "collar")["version"] == "1"
    assert sim.tick(t + D) == []  # a rolled-back rollout issues nothing more
    assert "rolled_back" in format_rollout_table(st)


def test_higher_alert_rate_alone_halts(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    sim = Sim(mgr)
    sim.tick(T0)
    t1 = T0 + 25 * H
    sim.tick(t1)
    canary = sorted(d for d in DEVICES if cohort_of(d, mgr.config) == "canary")
    feed_quality(store, canary, t1, 3, 4, 0.8, "2", "c")  # same precision, 4x the alerts
    feed_quality(store, [d for d in DEVICES if d not in canary], t1, 3, 1, 0.8, "1", "k")
    for k in range(1, 13):
        sim.tick(t1 + k * 6 * H)
    st = rollout_status(store, rid)
    halt = [e for e in st["transitions"] if e["to_state"] == "halted"]
    assert st["state"] == "rolled_back" and len(halt) == 1
    assert "alert rate" in halt[0]["reason"] and "precision" not in halt[0]["reason"]
    assert halt[0]["data"]["metrics"]["candidate"]["device_days"] >= 5


def test_failed_installs_beyond_the_limit_halt_in_shadow(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    shadow = sorted(d for d in DEVICES if cohort_of(d, mgr.config) != "fleet")
    bad = set(shadow[:4])  # limit: 3
    sim = Sim(mgr, ok=lambda a: not (a.command_name == "install_shadow" and a.device_id in bad))
    sim.tick(T0)
    assert rollout_status(store, rid)["device_states"]["failed"] == 4
    back = sim.tick(T0 + H)
    assert rollout_status(store, rid)["state"] == "halted"  # rollbacks out, waiting for replies
    assert sim.tick(T0 + 2 * H) == []
    st = rollout_status(store, rid)
    assert st["state"] == "rolled_back"
    assert "4 devices failed a step" in st["transitions"][-2]["reason"]
    # the failed ones too: an install that reported failure (or timed out) may have left a shadow
    assert {a.device_id for a in back} == set(shadow) and not any(a.args["promoted"] for a in back)
    assert not [a for a in sim.sent if a.command_name == "promote"]


def test_failures_within_the_limit_do_not_halt(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    shadow = sorted(d for d in DEVICES if cohort_of(d, mgr.config) != "fleet")
    bad = set(shadow[:2])
    sim = Sim(mgr, ok=lambda a: a.device_id not in bad)
    sim.tick(T0)
    sim.tick(T0 + 25 * H)
    assert rollout_status(store, rid)["state"] == "canary"


def test_unacknowledged_commands_time_out_and_count_as_failures(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    sim = Sim(mgr)
    sent = sim.tick(T0, reply=False)
    for a in sent[4:]:
        mgr.on_reply(a.device_id, a.command_name, True, "ok", T0 + 60)
    assert sim.tick(T0 + 23 * H) == []  # not yet timed out, and shadow waits for them
    assert rollout_status(store, rid)["state"] == "shadow"
    back = sim.tick(T0 + 25 * H)
    sim.tick(T0 + 26 * H)
    st = rollout_status(store, rid)
    assert [e for e in st["events"] if e["kind"] == "timeout"][0]["reason"].startswith("no reply to install_shadow")
    assert st["state"] == "rolled_back" and {a.command_name for a in back} == {"rollback"}


def test_operator_halt_and_unmatched_replies(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    assert not mgr.on_reply("dev-000", "promote", True, "", T0)  # nothing outstanding
    sim = Sim(mgr)
    sim.tick(T0, reply=False)
    mgr.halt(rid, "owner complaints", T0 + 60)
    back = sim.tick(T0 + 120)
    assert {a.command_name for a in back} == {"rollback"}  # also devices whose install is in flight
    assert rollout_status(store, rid)["transitions"][-1]["reason"] == "HALT: operator: owner complaints"


def test_shadow_agreement_gate(any_store: CloudStore) -> None:
    cfg = RolloutConfig(limits=LimitsConfig(min_shadow_agreement=0.9, min_shadow_windows=100))
    store, mgr = make(any_store, config=cfg)
    rid = mgr.start(V2, DEVICES, T0)
    sim = Sim(mgr)
    acts = sim.tick(T0)
    mgr.record_shadow_stats(acts[0].device_id, {"windows": 50, "agree": 20}, T0 + H)
    sim.tick(T0 + 2 * H)
    assert rollout_status(store, rid)["state"] == "shadow"  # too few windows to judge
    mgr.record_shadow_stats(acts[1].device_id, {"windows": 100, "agree": 80}, T0 + 3 * H)
    sim.tick(T0 + 4 * H)
    st = rollout_status(store, rid)
    assert st["state"] in ("halted", "rolled_back")
    assert "shadow agreement 0.667" in [e for e in st["transitions"] if e["to_state"] == "halted"][0]["reason"]


def test_status_cli_and_config_errors(tmp_path: Path, store_url: str) -> None:
    db = store_url
    store, mgr = make(open_store(db))
    rid = mgr.start(V2, DEVICES[:10], T0)
    Sim(mgr).tick(T0)
    store.close()
    out = io.StringIO()
    assert rollout_status_cli(db, out=out) == 0 and "shadow" in out.getvalue()
    out = io.StringIO()
    assert rollout_status_cli(db, rid, out=out) == 0 and "started after release check" in out.getvalue()
    assert rollout_status_cli(db, 999, out=io.StringIO()) == 2
    bad = tmp_path / "r.toml"
    bad.write_text("[cohorts]\ncanary_percent = 30.0\nshadow_percent = 20.0\n")
    with pytest.raises(ConfigError, match="canary_percent"):
        load_rollout_config(bad)
    bad.write_text("[limits]\nmax_failed = 3\n")
    with pytest.raises(ConfigError, match="limits -> max_failed: unknown key"):
        load(RolloutConfig, bad)
    again = open_store(db)
    assert json.loads(json.dumps(rollout_status(again, rid)))["devices"] == 10
    again.close()


def test_reply_messages_and_summary_hooks(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    acts = mgr.tick(T0)
    a = acts[0]
    assert a.command_id == f"rollout.{rid}.install_shadow.1"
    assert parse_command_id(a.command_id) == (rid, "install_shadow")
    assert parse_command_id("cfg-17") is None and parse_command_id("rollout.x.promote.1") is None
    assert not mgr.handle_reply(Reply(a.device_id, "cfg-17", True), T0)
    assert mgr.handle_reply(Reply(a.device_id, a.command_id, False, "sha256 mismatch"), T0 + 5)
    st = rollout_status(store, rid)
    assert st["device_states"]["failed"] == 1
    assert any(e["reason"] == "install_shadow FAILED: sha256 mismatch" for e in st["events"])
    mgr.on_summary(acts[1].device_id, {"day": "2027-01-15", "shadow": {"agree": 90, "disagree": 10}}, T0 + H)
    mgr.on_summary(acts[2].device_id, {"day": "2027-01-15"}, T0 + H)
    row = store.backend.execute("SELECT device_id, windows, agree FROM shadow_stats").fetchall()
    assert [tuple(r) for r in row] == [(acts[1].device_id, 100, 90)]


def test_start_rollout_cli(tmp_path: Path, store_url: str) -> None:
    priv, pub = signing.generate_keypair()
    path = tmp_path / "c.bundle"
    path.write_bytes(bundles.build_bundle(b"m", {"min_score": 0.2}, name="collar", version=2,
                                          private_key=priv, device_class="collar-v1"))
    db = store_url
    store = open_store(db)
    for d in DEVICES[:20]:
        store.set_device_state(d, "online", T0)
    store.close()
    out = io.StringIO()
    assert start_rollout_cli(db, path, public_key=pub, now=T0, out=out) == 1
    assert "no passed release check" in out.getvalue()
    assert release_check_cli(db, path, public_key=pub, out=io.StringIO()) == 0
    out = io.StringIO()
    assert start_rollout_cli(db, path, public_key=pub, now=T0, out=out) == 0
    assert out.getvalue().startswith("rollout 1: collar v2 to 20 devices")
    assert start_rollout_cli(db, tmp_path / "nope.bundle", out=io.StringIO()) == 2
    store = open_store(db)
    st = rollout_status(store, 1)
    store.close()
    assert st["devices"] == 20 and st["state"] == "shadow"


def test_an_unanswered_promote_is_rolled_back_as_promoted(any_store: CloudStore) -> None:
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    sim = Sim(mgr)
    sim.tick(T0)
    promotes = sim.tick(T0 + 25 * H, reply=False)
    lost = promotes[0]
    for a in promotes[1:]:
        mgr.on_reply(a.device_id, a.command_name, True, "ok", T0 + 26 * H)
    sim.tick(T0 + 50 * H)  # the lost promote times out: failed, but it may have happened
    row = store.backend.execute("SELECT state, failed_step FROM rollout_devices WHERE device_id = ?",
                                [lost.device_id]).fetchone()
    assert tuple(row) == ("failed", "promote")
    mgr.halt(rid, "test", T0 + 51 * H)
    back = {a.device_id: a.args["promoted"] for a in sim.tick(T0 + 52 * H)}
    assert back[lost.device_id] is True


@pytest.mark.parametrize(("cand", "ctrl", "expect"), [
    # devices, device_days, notified, tp, fp, ignored
    ((5, 10.0, 20, 18, 2, 0), (50, 100.0, 150, 120, 30, 0), []),  # better precision, same rate
    ((5, 10.0, 20, 10, 10, 0), (50, 100.0, 150, 120, 30, 0), ["precision 0.500"]),
    ((5, 10.0, 20, 4, 4, 0), (50, 100.0, 150, 120, 30, 0), []),  # 8 labels < min_labelled 10
    ((5, 10.0, 40, 36, 4, 0), (50, 100.0, 150, 120, 30, 0), ["alert rate 4.000/device-day"]),
    ((5, 4.0, 40, 36, 4, 0), (50, 100.0, 150, 120, 30, 0), []),  # 4 device-days < 5
    ((5, 10.0, 0, 0, 0, 0), (50, 100.0, 0, 0, 0, 0), []),
    ((5, 10.0, 1, 0, 0, 0), (50, 100.0, 0, 0, 0, 0), []),  # one alert is no rate evidence
    ((5, 10.0, 5, 0, 0, 0), (50, 100.0, 0, 0, 0, 0), ["alert rate 0.500/device-day"]),  # vs floor 0.05
    ((5, 10.0, 20, 18, 2, 8), (50, 100.0, 150, 120, 30, 30), ["ignore rate 0.400"]),
    ((5, 10.0, 20, 18, 2, 7), (50, 100.0, 150, 120, 30, 30), []),  # rise 0.15 is not > 0.15
])
def test_quality_breaches(cand: tuple, ctrl: tuple, expect: list[str]) -> None:
    from cloud.releases import GroupMetrics
    from cloud.releases.rollout import quality_breaches

    out = quality_breaches(GroupMetrics(*cand), GroupMetrics(*ctrl), LimitsConfig())
    assert [o.split(" (")[0].split(" vs")[0] for o in out] == expect


def test_a_rollout_needs_devices(any_store: CloudStore) -> None:
    _, mgr = make(any_store)
    with pytest.raises(NoDevicesError, match="at least one device"):
        mgr.start(V2, [], T0)


def test_the_checked_detector_config_is_the_one_rolled_out(any_store: CloudStore) -> None:
    store, mgr = make(any_store)  # checked: {"min_score": 0.3}
    with pytest.raises(ReleaseNotCheckedError, match="this detector config"):
        mgr.start(V2, DEVICES, T0, detector_config={"min_score": 0.0})
    assert mgr.start(V2, DEVICES, T0, detector_config={"min_score": 0.3})


def test_detector_hash_equals_the_bundle_manifest() -> None:
    from cloud.regression import detector_sha256

    priv, pub = signing.generate_keypair()
    cfg = {"min_score": 0.25, "metric_thresholds": {"résting_hr": 0.1}, "cusum_h": 12}
    data = bundles.build_bundle(b"m", cfg, name="collar", version=2, private_key=priv, device_class="c")
    b = bundles.read_bundle(data, pub, running_version=0, device_class="c")
    assert b.manifest.detector_sha256 == detector_sha256(b.detector_config) == detector_sha256(cfg)


def test_two_aggregators_on_one_store_do_not_resend(store_url: str) -> None:
    store, mgr = make(open_store(store_url))
    mgr.start(V2, DEVICES, T0)
    other = RolloutManager(open_store(store_url), load_rollout_config())
    first = mgr.tick(T0)
    assert first and other.tick(T0 + 1) == []  # state lives in the store, not in the manager
    assert other.on_reply(first[0].device_id, "install_shadow", True, "ok", T0 + 2)
    assert not mgr.on_reply(first[0].device_id, "install_shadow", True, "dup", T0 + 3)
    store.close()
    other.store.close()


def test_a_check_against_an_older_fleet_release_does_not_start_a_rollout(any_store: CloudStore) -> None:
    """A candidate checked while v1 ran may not roll out over v3: the check must be redone."""
    store, mgr = make(any_store)
    register_release(store, ReleaseRef("collar", "3", "c" * 64), status="fleet", now=T0 + D,
                     detector_config={"min_score": 0.5})
    with pytest.raises(ReleaseNotCheckedError, match="checked against v1, but the fleet now runs v3"):
        mgr.start(V2, DEVICES, T0 + 2 * D)
    check_release(store, {"min_score": 0.3}, {"min_score": 0.5}, candidate_ref=V2,
                  current_ref=ReleaseRef("collar", "3", "c" * 64), now=T0 + 2 * D)
    assert mgr.start(V2, DEVICES, T0 + 2 * D) > 0


def test_a_stage_without_evidence_past_max_hours_halts_and_rolls_back(any_store: CloudStore) -> None:
    """A candidate that silences alerts never gathers the canary's min_alerts: it must not sit in
    canary for ever (canary owners would get no alerts); past max_hours it halts and rolls back."""
    store, mgr = make(any_store)
    rid = mgr.start(V2, DEVICES, T0)
    sim = Sim(mgr)
    t = T0
    while t < T0 + 20 * D and rollout_status(store, rid)["state"] not in ("halted", "rolled_back"):
        sim.tick(t)
        t += 6 * H
    st = rollout_status(store, rid)
    assert st["state"] in ("halted", "rolled_back") and "max_hours 336" in st["reason"], st["reason"]
    assert t - T0 <= (24 + 336 + 12) * H
    for _ in range(4):
        sim.tick(t)
        t += 6 * H
    assert all(s in ("rolled_back", "pending") for s in rollout_status(store, rid)["device_states"])
