"""The agent offline (no broker): detection on simulated traces, bad input, commands, budget."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.agent import Agent
from device.budget import LatencyBudget
from device.config import AgentConfig
from device.detect.engine import Engine
from firmware_sim.collar import CollarSim
from firmware_sim.scenario import DAY, DEMO_START, Condition, default_fleet
from shared import schemas
from shared.command_signing import sign_command
from shared.records import CommandReport
from shared.signing import generate_keypair, save_public_key


def run_trace(tmp_path: Path, ind, days: float, **cfg) -> Agent:  # type: ignore[no-untyped-def]
    trace = tmp_path / f"{ind.device_id}.bin"
    sim = CollarSim(ind, DEMO_START, days)
    trace.write_bytes(b"".join(sim.frames()) + sim.end_frame())
    agent = Agent(AgentConfig(device_id=ind.device_id, source=str(trace), state_dir=str(tmp_path / ind.device_id),
                              exit_on_eof=True, **cfg), connect=False)
    agent.run()
    return agent


def events(agent: Agent) -> list:  # type: ignore[type-arg]
    return [r for r in agent.outbox.due(10**6) if r.kind == "event"]


@pytest.fixture(scope="module")
def fleet():  # type: ignore[no-untyped-def]
    return default_fleet(5, 8.0)


def test_illness_alerts_with_fever_or_resting_hr_and_excitement_does_not(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    ill = fleet[0]
    cond = ill.conditions[0]
    assert cond.kind == "illness"
    a = run_trace(tmp_path, ill, 8.0)
    evs = events(a)
    onset = DEMO_START + cond.start
    hits = [e for e in evs if onset <= e.ts <= onset + cond.duration]
    assert hits, f"illness not detected; events at {[e.ts - onset for e in evs]} s from onset"
    assert {"resting_hr", "skin_temp"} & set(hits[0].body["metrics"]), hits[0].body["metrics"]
    assert not {"heart_rate", "activity"} >= set(hits[0].body["metrics"]), "an illness signal leads"
    assert all(e.ts >= onset for e in evs), "no alert before the illness"
    assert hits[0].individual_id == "bella", "individual id comes from the device-info frame"

    calm = fleet[4]
    assert {c.kind for c in calm.conditions} == {"excitement"}
    b = run_trace(tmp_path, calm, 8.0)
    assert events(b) == [], "one-off excitement must not alert"


def test_events_carry_a_trace_that_replays_to_the_same_event(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    from cloud.regression.engine_replay import replay_trace

    a = run_trace(tmp_path, fleet[0], 8.0)
    evs = events(a)
    assert evs
    for e in evs:
        tr = json.loads(json.dumps(e.body["trace"]))  # what the cloud receives
        assert tr["metrics"] == list(a.engine.metrics)
        assert 6 * 3600 <= e.ts - tr["t0"] < 7 * 3600 + 60
        (again,) = [ev for ev in replay_trace(tr, {}, until=e.ts) if ev.ts == e.ts]
        assert list(again.metrics) == e.body["metrics"] and again.score == e.body["score"]
    assert not a.counts["event_trace_shortened"], "the default 6 h of 4 metrics fits whole"
    (tmp_path / "long").mkdir()
    c = run_trace(tmp_path / "long", fleet[0], 8.0, event_trace_hours=24.0)
    for e in events(c):  # a 24 h trace of 4 metrics would not fit: cut at a later snapshot
        tr = e.body["trace"]
        assert len(json.dumps(tr, separators=(",", ":"))) <= 64 * 1024
        assert replay_trace(tr, {}, until=e.ts)[-1].ts == e.ts
    assert c.counts["event_trace_shortened"] >= 1 and not c.counts["event_trace_dropped"]
    (tmp_path / "off").mkdir()
    b = run_trace(tmp_path / "off", fleet[0], 8.0, event_trace_hours=0.0)
    assert events(b) and all(e.body["trace"] is None for e in events(b))


def test_summaries_carry_latency_ingest_and_hourly_baselines(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    a = run_trace(tmp_path, fleet[4], 2.5)
    sums = [r.body for r in a.outbox.due(1000) if r.kind == "summary"]
    assert [s["day"] for s in sums] == ["2026-01-05", "2026-01-06", "2026-01-07"]
    full = sums[1]
    assert full["minutes"] == 1440 and full["latency"]["windows"] > 1440
    assert full["latency"]["p99_ms"] >= full["latency"]["p50_ms"] > 0
    assert len(full["hourly"]["resting_hr"]["baseline"]) == 24
    assert full["ingest"]["frames_ok"] > 1440 * 3
    # rest and sleep periods: the night's sleep counts on the day it ends
    traits, day_start = fleet[4].traits, DEMO_START + DAY
    rest = full["rest"]
    night = rest["main_sleep"]
    # steps cannot tell lying awake from asleep: the night's period may start with the evening's rest
    assert -15 <= night["minutes"] - 60 * traits.sleep_hours <= 90, (night, traits.sleep_hours)
    assert night["start_ts"] < day_start < night["end_ts"] < day_start + DAY / 2
    assert rest["sleep_periods"] == 1 and rest["sleep_minutes"] == night["minutes"]
    assert night["minutes"] <= rest["longest_minutes"] and rest["periods"] > 5
    assert night["minutes"] < rest["minutes"] < full["minutes"]
    hourly = rest["hourly_minutes"]  # the rest pattern by time of day: still all night
    assert sum(hourly) == rest["minutes"] and all(0 <= h <= 60 for h in hourly)
    asleep = [h for h in range(24) if (h - traits.sleep_start_h) % 24 < traits.sleep_hours - 1
              and (h - 1 - traits.sleep_start_h) % 24 < traits.sleep_hours - 1]
    assert len(asleep) >= 6 and all(hourly[h] == 60 for h in asleep), (asleep, hourly)


def test_sensor_faults_are_counted_and_never_crash(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    faulty = replace(fleet[3], conditions=(
        Condition("garbage", 0.0, 2 * DAY, magnitude=0.01),
        Condition("stuck", 0.5 * DAY, 3 * 3600.0),
        Condition("saturation", 1.0 * DAY, 600.0),
        Condition("clock_jump", 1.5 * DAY, 0.0, magnitude=-3600.0),
        Condition("clock_jump", 1.8 * DAY, 0.0, magnitude=7200.0),
    ))
    a = run_trace(tmp_path, faulty, 2.0)
    c = a.ingest_counts()
    assert c["bytes_rejected"] > 1000 and c["crc_errors"] > 0 and c["resyncs"] > 0
    assert c["hr_stuck"] >= 60 and c["hr_saturated"] == 10
    assert c["clock_jump_back"] == 1 and c["gap_or_clock_jump_forward"] == 1
    assert c["windows"] >= 2 * 1440 - 60 - 120, "garbage costs frames, not the stream"
    assert a.outbox.integrity_ok()


def test_state_survives_restart(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    a = run_trace(tmp_path, fleet[4], 2.0)
    assert not a.engine.warming_up
    b = Agent(a.cfg, connect=False)
    assert b.counts["engine_restored"] == 1 and not b.engine.warming_up
    assert b.individual_id == "daisy", "the individual learnt from the device-info frame is kept"
    assert b.engine.state() == a.engine.state()


def test_upgrade_adding_a_metric_keeps_the_learnt_baselines(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    a = run_trace(tmp_path, fleet[4], 2.0)
    old = ("heart_rate", "resting_hr", "activity")  # what agents before skin_temp saved
    i = [a.engine.metrics.index(m) for m in old]
    legacy = Engine(old)
    legacy._st[:] = a.engine._st[i]
    legacy._eng[:] = a.engine._eng
    a.outbox.put_many({"engine_state": legacy.state(), "engine_metrics": json.dumps(list(old)).encode()})
    b = Agent(a.cfg, connect=False)
    assert b.counts["engine_restored"] == 1 and b.engine.metrics == a.engine.metrics
    assert b.engine.state() != Engine(b.engine.metrics).state()
    for m in old:
        j = b.engine.metrics.index(m)
        np.testing.assert_array_equal(b.engine._st[j], a.engine._st[a.engine.metrics.index(m)], err_msg=m)
    assert not b.engine.warming_up


def _agent_with_key(tmp_path: Path):  # type: ignore[no-untyped-def]
    priv, pub = generate_keypair()
    save_public_key(tmp_path / "cloud.pub", pub)
    a = Agent(AgentConfig(device_id="collar-009", state_dir=str(tmp_path / "s"),
                          cloud_public_key=str(tmp_path / "cloud.pub")), connect=False)
    return a, priv


def _command(a: Agent, cid: str, name: str, counter: int, args: dict[str, Any]) -> schemas.Command:
    """A command for the agent's incarnation, fresh for an hour."""
    return schemas.Command(a.cfg.device_id, cid, name, counter, args, expires_at=time.time() + 3600,
                           incarnation=a.outbox.incarnation)


def test_signed_commands_accepted_and_bad_ones_refused_and_counted(tmp_path: Path) -> None:
    a, priv = _agent_with_key(tmp_path)
    good = sign_command(priv, _command(a, "c1", "collect_more", 1, {"minutes": 30}))
    a._on_command(schemas.encode(good))
    assert a.raw_until > 0
    other, _ = generate_keypair()
    bad = [
        schemas.encode(good),  # replayed (counter not above the last)
        schemas.encode(replace(good, counter=2, args={"minutes": 999})),  # tampered after signing
        schemas.encode(sign_command(other, replace(good, counter=3))),  # foreign key
        schemas.encode(replace(good, counter=4, sig="")),  # unsigned
        schemas.encode(sign_command(priv, replace(good, device_id="collar-010", counter=5))),  # other device
        schemas.encode(sign_command(priv, replace(good, name="self_destruct", counter=6))),  # unknown
        b"\x00not json",
    ]
    for payload in bad:
        a._on_command(payload)
    assert a.commands.counts["rejected"] == len(bad)
    assert a.commands.counts["ok.collect_more"] == 1
    reports = [r.body for r in a.outbox.due(100) if r.kind == "report"]
    assert [r["ok"] for r in reports] == [True] + [False] * len(bad)
    assert "replay" in reports[1]["detail"] and "signature invalid" in reports[2]["detail"]
    ok = sign_command(priv, _command(a, "c9", "config", 7, {"action": "widen", "metric": "resting_hr", "factor": 2.0}))
    a._on_command(schemas.encode(ok))
    assert a.commands.counts["ok.config"] == 1


def test_counter_persists_across_restart(tmp_path: Path) -> None:
    a, priv = _agent_with_key(tmp_path)
    cmd = sign_command(priv, _command(a, "c1", "collect_more", 5, {"minutes": 1}))
    a._on_command(schemas.encode(cmd))
    b = Agent(a.cfg, connect=False)
    b._on_command(schemas.encode(cmd))
    assert b.commands.counts["rejected"] == 1, "a command replayed after a reboot is refused"


def test_budget_sheds_optional_work_instead_of_lagging(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    class SlowShadow:
        window_seconds = 4.0
        calls = 0

        def predict(self, window: np.ndarray, rate_hz: float):  # type: ignore[no-untyped-def]
            SlowShadow.calls += 1
            time.sleep(0.004)
            raise ValueError("never reached in budget")

    trace = tmp_path / "t.bin"
    sim = CollarSim(fleet[4], DEMO_START, 0.5)
    trace.write_bytes(b"".join(sim.frames()) + sim.end_frame())
    a = Agent(AgentConfig(device_id="collar-004", source=str(trace), state_dir=str(tmp_path / "s"),
                          exit_on_eof=True, budget_ms=1.0), connect=False)
    a.releases.shadow = SlowShadow()
    a.raw_until = DEMO_START + 10 * DAY
    a.run()
    rep = a.budget.report()
    assert rep.shed_shadow > 0.8 * 720, "the shadow model is shed once the budget is exceeded"
    assert rep.shed_raw > 0, "then raw capture"
    assert a.counts["windows"] == 720, "every window is still scored"
    assert SlowShadow.calls < 20


def test_budget_levels_rise_and_fall() -> None:
    b = LatencyBudget(10.0, calm_windows=5)
    for _ in range(20):
        b.record(50.0)
    assert b.level == 2 and b.overruns == 20
    for _ in range(200):
        b.record(0.1)
    assert b.level == 0
    assert b.report().p99_ms == pytest.approx(50.0)


def test_offline_replay_cli_writes_events(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    from edgeloop.cli import main

    trace = tmp_path / "t.bin"
    sim = CollarSim(fleet[0], DEMO_START, 8.0)
    trace.write_bytes(b"".join(sim.frames()) + sim.end_frame())
    assert main(["replay", "trace", str(trace), "--out", str(tmp_path / "r")]) == 0
    lines = (tmp_path / "r" / "events.jsonl").read_text().splitlines()
    assert lines and json.loads(lines[0])["individual_id"] == "bella"


def test_perception_unit_drifts_detected_and_frozen_camera_counted(tmp_path: Path) -> None:
    from firmware_sim.perception import PerceptionSim, default_unit

    unit = default_unit(14.0)
    sim = PerceptionSim(unit, DEMO_START, 14.0)
    trace = tmp_path / "pi.bin"
    trace.write_bytes(b"".join(c for _, c in sim.chunks()) + sim.end_frame())
    a = Agent(AgentConfig(device_id="pi-000", kind="perception", source=str(trace),
                          state_dir=str(tmp_path / "pi"), exit_on_eof=True), connect=False)
    a.run()
    evs = events(a)
    cond = {c.kind: c for c in unit.conditions}
    drift, novel = cond["conf_drift"], cond["novel_class"]
    assert any(DEMO_START + drift.start <= e.ts <= DEMO_START + drift.end and "confidence" in e.body["metrics"]
               for e in evs), [e.body for e in evs]
    assert any(DEMO_START + novel.start <= e.ts <= DEMO_START + novel.end + 6 * 3600 and "novel" in e.body["metrics"]
               for e in evs)
    assert all(e.ts >= DEMO_START + drift.start for e in evs), "no alert before the first condition"
    frozen_minutes = cond["frozen"].duration / 60
    assert frozen_minutes - 25 <= a.ingest_counts()["detections_frozen"] <= frozen_minutes


def test_score_rest_adds_rest_hours_as_a_fifth_metric(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    a = run_trace(tmp_path, fleet[4], 1.5, score_rest=True)
    assert a.engine.metrics[-1] == "rest" and len(a.engine.metrics) == 5
    sums = [r.body for r in a.outbox.due(1000) if r.kind == "summary"]
    hours = [h for s in sums for h in s["hourly"]["rest"]["mean"] if h is not None]
    assert len(hours) >= 36 and all(0.0 <= h <= 24.0 for h in hours)
    assert 10.0 < hours[-1] < 20.0, hours  # a dog at rest ~10 h asleep + a few hours awake


def test_acks_count_only_for_this_outbox_incarnation_and_refusals_move_aside(tmp_path: Path) -> None:
    from shared import topics

    a = Agent(AgentConfig(device_id="collar-009", state_dir=str(tmp_path / "s")), connect=False)
    seqs = [a.outbox.append("summary", "rex", float(i), {"i": i}) for i in range(3)]
    other = "f" * 32 if a.outbox.incarnation != "f" * 32 else "e" * 32
    a.syncer.handle_message(topics.ack("collar-009"), schemas.encode(schemas.Ack("collar-009", tuple(seqs), other)))
    assert a.outbox.pending_seqs() == seqs, "an ack for the device's earlier life deletes nothing"
    assert a.counts["ack_other_incarnation"] == 1
    ack = schemas.Ack("collar-009", (seqs[0],), a.outbox.incarnation, (schemas.Rejection(seqs[1], "bad id"),))
    a.syncer.handle_message(topics.ack("collar-009"), schemas.encode(ack))
    assert a.outbox.pending_seqs() == [seqs[2]]
    rep = a.report()
    assert rep["rejected"]["count"] == 1 and rep["rejected"]["latest"][0]["seq"] == seqs[1]
    assert rep["incarnation"] == a.outbox.incarnation and rep["outbox"]["rejected.summary"] == 1


def test_a_bad_individual_id_is_refused_at_the_edge_and_a_good_one_later_is_learnt(tmp_path: Path) -> None:
    from shared.frames import Frame, encode_frame
    from shared.payloads import DeviceInfo, encode_payload

    def info(name: str) -> bytes:
        sensor, payload = encode_payload(DeviceInfo({"individual_id": name}))
        return encode_frame(Frame(sensor, 1, int(DEMO_START * 1000), payload))

    a = Agent(AgentConfig(device_id="collar-009", state_dir=str(tmp_path / "s")), connect=False)
    a.feed(info("Bella Smith"))
    assert a.counts["individual_id_rejected"] == 1 and a.individual_id == ""
    a.records.append(CommandReport("c1", True), DEMO_START)
    assert a.outbox.due()[0].individual_id == "collar-009", "filed under the device id"
    a.feed(info("bella"))
    assert a.individual_id == "bella"
    # a bad name saved by an older agent is refused on restart too
    a.outbox.put("individual_id", b"Bella Smith")
    b = Agent(a.cfg, connect=False)
    assert b.individual_id == "" and b.counts["individual_id_rejected"] == 1


def test_progress_is_a_public_view_and_profiles_replace_the_kind_branches(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    from device.profiles import CollarProfile, PerceptionProfile

    a = Agent(AgentConfig(device_id="collar-009", state_dir=str(tmp_path / "c")), classifier=None, connect=False)
    p0 = a.progress()
    assert (p0.started, p0.ts, p0.windows, p0.events) == (False, None, 0, 0)
    trace = tmp_path / "t.bin"
    sim = CollarSim(fleet[4], DEMO_START, 0.2)
    trace.write_bytes(b"".join(sim.frames()) + sim.end_frame())
    b = Agent(AgentConfig(device_id="collar-009", source=str(trace), state_dir=str(tmp_path / "c2"),
                          exit_on_eof=True), classifier=None, connect=False)
    b.run()
    p1 = b.progress()
    assert p1.started and p1.windows == b.counts["windows"] > 200 and p1.ts is not None and p1.ts > DEMO_START
    assert isinstance(a.profile, CollarProfile) and a.profile.classifies
    pi = Agent(AgentConfig(device_id="pi-000", kind="perception", state_dir=str(tmp_path / "p")), connect=False)
    assert isinstance(pi.profile, PerceptionProfile) and pi.releases.classifier is None
    assert pi.profile.new_day("2026-01-01", DEMO_START).track_rest is False


def test_the_collar_reads_its_nights_into_the_daily_summary(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    """A sleeping dog's nights go through the night watch; the morning's verdict travels in the
    summary of that day, and the watch's state is saved and restored with the engine's."""
    a = run_trace(tmp_path, fleet[4], 3.0)
    a.write_summary()
    nights = [r.body["night"] for r in a.outbox.due(10**6) if r.kind == "summary" and "night" in r.body]
    assert len(nights) >= 2
    assert nights[-1]["level"] == "green" and nights[-1]["z"]["rhr"] is None  # a young baseline
    a.save_state()
    b = Agent(replace(a.cfg, source=a.cfg.source), connect=False)
    assert b.nights is not None and a.nights is not None and b.nights.watch.state() == a.nights.watch.state()
