"""Frigate as a perception source (issue 16): Frigate's documented ``frigate/events`` messages
(tests/data/frigate_events.json: synthetic, in that format) -> per camera class rates -> events.
The integration test publishes them into a private mosquitto the agent subscribes to."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from device.config import AgentConfig
from device.frigate import FrigateCameras, FrigateError, parse_event
from device.frigate_agent import FrigateAgent, SourceUrlError, parse_source
from edgeloop.cli import main

DATA = Path(__file__).parent / "data" / "frigate_events.json"
LEARN_DAYS = 1 / 24  # the fixture learns for its first hour


def _messages() -> list[dict[str, Any]]:
    doc = json.loads(DATA.read_text())
    assert doc["note"].startswith("SYNTHETIC")
    return list(doc["messages"])


def test_a_frigate_message_is_read_and_a_bad_one_is_named() -> None:
    obj = parse_event(json.dumps(_messages()[0]).encode())
    assert (obj.type, obj.camera, obj.label) == ("new", "front_door", "car") and 0.8 <= obj.score <= 0.95
    for bad, why in ((b"not json", "not JSON"), (b'{"type": "gone", "after": {}}', "type"),
                     (json.dumps({"type": "new", "after": {"id": "1", "label": "cat", "start_time": 1.0}}).encode(),
                      "after.camera"),
                     (json.dumps({"type": "end", "after": {"id": "1", "camera": "c", "label": "cat",
                                                            "start_time": "noon"}}).encode(), "start_time")):
        with pytest.raises(FrigateError, match=why):
            parse_event(bad)


def test_each_camera_keeps_its_own_baseline() -> None:
    cams = FrigateCameras(learn_days=LEARN_DAYS)
    found = []
    for m in _messages():
        found += cams.add(parse_event(json.dumps(m).encode()))
    got = sorted((cam, f.what) for cam, f in found)
    # a person is common at the front door and new on the driveway; the false-positive horse is not
    assert got == [("driveway", "novel_class:person"), ("front_door", "novel_class:bear")], got
    assert set(cams.cameras) == {"front_door", "driveway"}
    assert cams.cameras["driveway"].rates.rate("person", 1) == 0.0 < cams.cameras["front_door"].rates.rate("person", 1)


def test_one_message_with_a_bogus_time_does_not_stall_its_camera() -> None:
    cams = FrigateCameras(learn_days=LEARN_DAYS)
    msgs = [parse_event(json.dumps(m).encode()) for m in _messages()]
    half = len(msgs) // 2
    for obj in msgs[:half]:
        cams.add(obj)
    before = cams.cameras["front_door"].next_minute
    bogus = msgs[half]
    cams.add(type(bogus)(**{**bogus.__dict__, "frame_time": bogus.frame_time + 400 * 86400.0}))
    found = [f for obj in msgs[half:] for _, f in cams.add(obj)]
    assert cams.restarts == 2 and cams.cameras["front_door"].next_minute > before  # it went on
    assert sorted(f.what for f in found) == ["novel_class:bear", "novel_class:person"]


def test_the_source_url_names_broker_and_topic() -> None:
    assert parse_source("mqtt://u:p%40ss@nvr.local:1884/frigate/events") == (
        "mqtt://nvr.local:1884", "frigate/events", "u", "p@ss")
    with pytest.raises(SourceUrlError, match="event topic"):
        parse_source("mqtt://nvr.local:1883")
    assert main(["agent", "--source", "mqtt://nvr.local:1883/frigate/#", "--offline"]) == 2


@pytest.mark.mosquitto
def test_the_agent_takes_frigate_events_from_a_private_mosquitto(tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    cfg = AgentConfig(source=f"{mosquitto.url}/frigate/events", state_dir=str(tmp_path / "state"),
                      learn_days=LEARN_DAYS, drain_timeout=0.5)
    stop, made = threading.Event(), threading.Event()
    report: dict[str, Any] = {}
    box: list[FrigateAgent] = []

    def serve() -> None:  # the agent's SQLite outbox belongs to the thread that made it
        box.append(FrigateAgent(cfg, connect=False))
        made.set()
        report.update(box[0].run(stop))

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    try:
        assert made.wait(10)
        agent = box[0]
        assert agent.subscribed.wait(10), "the agent never subscribed to frigate/events"
        pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="frigate-test")
        pub.connect("127.0.0.1", int(mosquitto.url.rsplit(":", 1)[1]))
        pub.loop_start()
        msgs = _messages()
        for m in msgs:
            pub.publish("frigate/events", json.dumps(m), qos=1).wait_for_publish(5)
        pub.publish("frigate/events", b"{broken", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 20
        while agent.counts["frigate_messages"] + agent.counts["frigate_rejected"] < len(msgs) + 1:
            assert time.monotonic() < deadline, dict(agent.counts)
            time.sleep(0.05)
        pub.loop_stop()
        pub.disconnect()
    finally:
        stop.set()
        worker.join(10)
    assert report["cameras"] == ["driveway", "front_door"] and report["ingest"]["frigate_rejected"] == 1
    # a restarted agent finds the events in its outbox and starts from the cameras' saved rates
    again = FrigateAgent(cfg, connect=False)
    events = [(r.individual_id, r.body["metrics"], r.body["kind"]) for r in again.outbox.due(1000) if r.kind == "event"]
    assert sorted(events) == [("driveway", ["novel_class:person"], "novel"), ("front_door", ["novel_class:bear"], "novel")]
    assert again.cameras.cameras["front_door"].rates.rate("person", 0) > 0


def _frigate_day_stream(days: int, drift_from_day: float, seed: int = 3) -> list[bytes]:
    """Synthetic Frigate messages (documented format): one camera, an object about every 10
    minutes in the day, fewer at night; top scores around 0.86 until ``drift_from_day``, 0.62 after."""
    import random

    rng = random.Random(seed)
    t0, out = 1767571200.0, []
    for k in range(days * 144):
        start = t0 + k * 600 + rng.uniform(0, 300)
        hour = (start - t0) / 3600 % 24
        if not 6 <= hour < 21 and rng.random() < 0.7:
            continue
        top = rng.gauss(0.62 if start - t0 >= drift_from_day * 86400 else 0.86, 0.03)
        oid = f"{start:.6f}-{k:05d}"
        for kind, t in (("new", start), ("end", start + 120)):
            after = {"id": oid, "camera": "garden", "label": "person", "frame_time": t, "start_time": start,
                     "end_time": t if kind == "end" else None, "score": top - 0.05, "top_score": top,
                     "false_positive": False, "sub_label": None, "current_zones": [], "entered_zones": []}
            out.append(json.dumps({"type": kind, "before": after, "after": after}).encode())
    return out


def test_a_cameras_confidence_drift_is_caught_from_frigate_scores() -> None:
    cams = FrigateCameras()
    found = [f for m in _frigate_day_stream(7, drift_from_day=5.0) for _, f in cams.add(parse_event(m))]
    t0 = 1767571200.0
    drift = [f for f in found if f.what == "confidence"]
    assert drift, [(f.what, (f.ts - t0) / 86400) for f in found]
    first = drift[0]
    assert first.kind == "sustained" and first.direction == -1 and first.observed < first.expected
    # objects come about every 10 minutes (fewer at night): the evidence needs most of a day
    assert 5 * 86400 <= first.ts - t0 <= 6 * 86400, (first.ts - t0) / 86400
    assert all(f.ts - t0 >= 5 * 86400 for f in found), "nothing before the drift"
    # the engine's state travels with the rates: a restored camera keeps what it learnt
    again = FrigateCameras()
    again.restore(json.loads(json.dumps(cams.state())))
    assert not again.cameras["garden"].engine.warming_up


@pytest.mark.mosquitto
def test_edgeloop_agent_with_a_frigate_source_url(tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    """The CLI as a user runs it: ``edgeloop agent --source mqtt://.../frigate/events``, SIGTERM
    when done, the final report on stdout and the events in the outbox."""
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "agent.toml").write_text(f"learn_days = {LEARN_DAYS}\n")
    proc = subprocess.Popen([sys.executable, "-m", "edgeloop.cli", "agent", "--source", f"{mosquitto.url}/frigate/events",
                             "--config", str(tmp_path / "agent.toml"), "--state-dir", str(tmp_path / "s"), "--offline"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        for line in proc.stderr:  # logfmt lines; the subscription is confirmed by the broker
            if "frigate.subscribed" in line:
                break
            assert time.monotonic() < deadline and proc.poll() is None, line
        pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="frigate-cli-test")
        pub.connect("127.0.0.1", int(mosquitto.url.rsplit(":", 1)[1]))
        pub.loop_start()
        msgs = _messages()
        for m in msgs:
            pub.publish("frigate/events", json.dumps(m), qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        time.sleep(1.0)  # QoS 1 delivered; the agent reads its inbox every 0.1 s
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    final = json.loads(out.strip().splitlines()[-1])["final"]
    assert proc.returncode == 0 and final["device_id"] == "frigate-000"
    assert final["ingest"]["frigate_messages"] == len(msgs) and final["outbox"]["appended.event"] == 2, final
