"""Release check through the real engine: device traces, live == replay, engine-only candidates."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from recs import record_of

from cloud.regression import RegressionConfig, ReplayError, capture_cases, check_release, list_cases
from cloud.regression.engine_replay import EngineReplayer, case_trace, replay_trace
from cloud.regression.fixtures import add_alert, add_feedback
from cloud.regression.replay import ThresholdReplayer, as_replayer
from device.detect.detector_config import engine_config
from device.detect.engine import Engine, EngineConfig
from device.trace import TraceRing
from shared.codec import to_json
from shared.schemas import UplinkBatch

T0 = 1_767_571_200.0
METRICS = ("resting_hr", "skin_temp")


def _stream(days: float = 4.0, shift_day: float = 3.0, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Minute rows: a daily cycle and noise, resting HR +12 and skin temp +0.6 from ``shift_day``."""
    rng = np.random.default_rng(seed)
    ts = T0 + 60.0 * np.arange(int(days * 1440))
    day = 2 * np.pi * (ts % 86400) / 86400
    hr = 62 + 3 * np.sin(day) + rng.normal(0, 1.5, ts.size)
    temp = 38.2 + 0.2 * np.sin(day) + rng.normal(0, 0.1, ts.size)
    hr[ts >= T0 + shift_day * 86400] += 12
    temp[ts >= T0 + shift_day * 86400] += 0.6
    hr[rng.random(ts.size) < 0.3] = np.nan  # resting HR is missing in active minutes
    return ts, np.column_stack([hr, temp])


def _device_run(ts: np.ndarray, vals: np.ndarray) -> tuple[list[dict], Engine]:
    """What the agent does: snapshot before the row, score it, keep the row; events carry the trace."""
    eng = Engine(METRICS, directions={"resting_hr": 1, "skin_temp": 1})
    ring = TraceRing(METRICS)
    bodies = []
    for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
        ring.before_row(t, eng.state)
        out = eng.process_one(t, v, reuse=True)
        ring.add_row(t, v)
        for ev in out.events:
            bodies.append({"ts": ev.ts, "start_ts": ev.start_ts, "metrics": list(ev.metrics),
                           "directions": list(ev.directions), "score": ev.score, "severity": ev.severity,
                           "baseline": list(ev.baseline), "observed": list(ev.observed),
                           "trace": json.loads(json.dumps(to_json(ring.export())))})
    return bodies, eng


@pytest.fixture(scope="module")
def device_events() -> list[dict]:
    ts, vals = _stream()
    bodies, _ = _device_run(ts, vals)
    assert bodies, "the shift must raise an event on the device"
    return bodies


def test_trace_holds_the_lookback_and_a_snapshot_before_it(device_events: list[dict]) -> None:
    tr = device_events[0]["trace"]
    assert tr["metrics"] == list(METRICS) and len(tr["ts"]) == len(tr["values"])
    span = device_events[0]["ts"] - tr["t0"]
    assert 6 * 3600 <= span < 7 * 3600 + 60, span
    assert tr["ts"][0] == tr["t0"] and tr["ts"][-1] == device_events[0]["ts"]
    assert any(v[0] is None for v in tr["values"]), "missing values travel as null"


def test_trace_ring_keeps_the_lookback_and_exports_shorter_traces() -> None:
    ring = TraceRing(("a",), lookback_s=3 * 3600.0, snapshot_every_s=3600.0)
    states = iter(range(10**6))
    for i in range(12 * 60):  # 12 h of minutes
        t = T0 + 60.0 * i
        ring.before_row(t, lambda: str(next(states)).encode())
        ring.add_row(t, [float(i)])
    full, short = ring.export(), ring.export(ring.snapshots - 1)
    assert full is not None and short is not None and ring.export(ring.snapshots) is None
    assert 3 * 3600 <= full.ts[-1] - full.t0 < 4 * 3600
    assert short.t0 > full.t0 and short.ts[0] == short.t0 and short.ts[-1] == full.ts[-1]
    ring.before_row(T0, lambda: b"x")  # the clock went back: start over
    again = ring.export()
    assert ring.snapshots == 1 and again is not None and again.ts == ()
    with pytest.raises(ValueError, match="must be > 0"):
        TraceRing(("a",), lookback_s=0)


def test_replay_with_the_device_config_gives_the_device_event(device_events: list[dict]) -> None:
    for body in device_events:
        got = replay_trace(body["trace"], {}, until=body["ts"])
        assert [ev.ts for ev in got] == [body["ts"]]
        for k in ("metrics", "directions", "baseline", "observed"):
            assert list(getattr(got[0], k)) == body[k], k
        assert (got[0].score, got[0].start_ts) == (body["score"], body["start_ts"])


def test_engine_only_candidate_is_judged_by_the_engine(device_events: list[dict]) -> None:
    case = {"event": {"body": device_events[0]}, "alert": None}
    assert EngineReplayer({}).replay(case)
    silent = {"cusum_h": 200.0}  # the gate alone cannot see an engine key
    assert ThresholdReplayer(silent).replay(case), "the gate on recorded numbers still alerts"
    r = EngineReplayer(silent)
    assert not r.replay(case) and r.replayed == 1
    no_trace = {"event": {"body": {k: v for k, v in device_events[0].items() if k != "trace"}}}
    assert case_trace(no_trace) is None
    assert r.replay(no_trace), "without a trace the gate decides on the recorded numbers"
    assert isinstance(as_replayer(silent), EngineReplayer)


def test_candidate_engine_settings_and_bad_values(device_events: list[dict]) -> None:
    assert engine_config({"cusum_h": "20", "min_score": 0.3}).cusum_h == 20.0
    assert engine_config({}) == EngineConfig()
    with pytest.raises(ValueError, match="cusum_h"):
        engine_config({"cusum_h": "high"})
    with pytest.raises(ReplayError, match="cusum_h"):
        EngineReplayer({"cusum_h": [1]})


@pytest.mark.parametrize("mutate, match", [
    (lambda t: t.pop("state"), "trace unusable"),
    (lambda t: t.update(state="***"), "trace unusable"),
    (lambda t: t.update(values=t["values"][:-1]), "trace unusable"),
    (lambda t: t.update(state=base64.b64encode(b"ELE2 too short").decode()), "state"),
    (lambda t: t.update(metrics=["resting_hr"]), "trace"),
])
def test_bad_traces_say_what_is_wrong(device_events: list[dict], mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    tr = json.loads(json.dumps(device_events[0]["trace"]))
    mutate(tr)
    with pytest.raises(ReplayError, match=match):
        replay_trace(tr, {})


def test_release_check_blocks_a_silent_engine_on_a_traced_confirmed_case(device_events: list[dict]) -> None:
    from cloud.store.db import CloudStore

    store = CloudStore()
    body = device_events[0]
    store.store_batch(UplinkBatch("dev-1", (record_of(1, "event", body["ts"], "ind-1", body),)))
    add_alert(store, "ill", body["ts"], seq=1, score=body["score"],
              metrics={m: (o, b) for m, o, b in zip(body["metrics"], body["observed"], body["baseline"],
                                                     strict=True)})
    add_feedback(store, "ill", "confirm", body["ts"] + 3600)
    capture_cases(store, body["ts"] + 7200,
                  RegressionConfig(capture_confirmed=True, sensitive_kinds=("miss", "confirmed")))
    (case,) = list_cases(store)
    assert case_trace(case) is not None
    blocked = check_release(store, {"cusum_h": 200.0}, {})
    assert not blocked.passed and "regresses" in blocked.reasons[0]
    ok = check_release(store, {"cusum_h": 10.0}, {})
    assert ok.passed and "1 of 1 cases replayed through the real engine" in ok.reasons[-1]


def test_a_damaged_trace_falls_back_to_the_gate_and_is_reported(device_events: list[dict]) -> None:
    body = json.loads(json.dumps(device_events[0]))
    body["trace"]["state"] = "not base64!"
    case = {"event": {"body": body}, "alert": None}
    r = EngineReplayer({"cusum_h": 200.0})
    assert r.replay(case), "judged by the gate on the recorded numbers"
    assert r.replayed == 0 and len(r.unusable) == 1 and "trace unusable" in r.unusable[0]
