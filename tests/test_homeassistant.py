"""Home Assistant MQTT discovery: the configs follow the convention (topic shape, retained JSON,
unique_id = object_id from [a-zA-Z0-9_-], one device block per animal, origin, valid device
classes and units), states carry status, last alert and battery; Home Assistant's birth message
makes the cloud publish the configs again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker
from recs import record_of
from test_aggregator import event_body, make

from cloud.ops.homeassistant import (
    HomeAssistantBridge,
    discovery_messages,
    individual_states,
    state_topic,
)
from cloud.store.read_model import ReadModel
from shared import schemas, topics

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
TOPIC = re.compile(r"^homeassistant/(sensor|binary_sensor)/([a-zA-Z0-9_-]+)/config$")
# device classes Home Assistant documents for each platform (the ones we use must be among them)
SENSOR_CLASSES = {"battery", "timestamp", "enum", "temperature", "duration"}
BINARY_CLASSES = {"problem", "connectivity", "battery", "motion", "safety"}


def check_convention(topic: str, cfg: dict) -> None:  # type: ignore[type-arg]
    m = TOPIC.match(topic)
    assert m, f"{topic} is not <prefix>/<component>/<object_id>/config with [a-zA-Z0-9_-] ids"
    component, object_id = m.groups()
    assert cfg["unique_id"] == object_id == cfg["object_id"], "best practice: object_id = unique_id"
    assert cfg["name"] and cfg["state_topic"] and "value_template" in cfg
    assert not any(c in cfg["state_topic"] for c in "+#"), "a state topic is a topic, not a filter"
    dev = cfg["device"]
    assert isinstance(dev["identifiers"], list) and dev["identifiers"] and dev["name"]
    assert cfg["origin"]["name"] == "edgeloop"
    if component == "sensor":
        assert cfg.get("device_class") in SENSOR_CLASSES
        if cfg["device_class"] == "battery":
            assert cfg["unit_of_measurement"] == "%" and cfg["state_class"] == "measurement"
        if cfg["device_class"] == "enum":
            assert "options" in cfg and "unit_of_measurement" not in cfg
        if cfg["device_class"] == "timestamp":
            assert "unit_of_measurement" not in cfg and "state_class" not in cfg
    else:
        assert cfg.get("device_class") in BINARY_CLASSES and cfg["payload_on"] == "ON" and cfg["payload_off"] == "OFF"
    json.dumps(cfg)  # a JSON dictionary


def test_discovery_payloads_follow_the_convention() -> None:
    msgs = discovery_messages("rex.jr", ["collar-003"])
    assert len(msgs) == 5
    for topic, cfg in msgs:
        check_convention(topic, cfg)
    devices = {json.dumps(cfg["device"], sort_keys=True) for _, cfg in msgs}
    assert len(devices) == 1, "all entities of one animal group under one device"
    assert {cfg["unique_id"] for _, cfg in msgs} == {f"edgeloop_rex_jr_{k}" for k in
                                                     ("alert", "status", "last_alert", "battery", "collar")}
    assert state_topic("rex.jr") == "edgeloop/v1/ha/rex.jr/state"


def test_states_come_from_the_store() -> None:
    agg, _, _ = make()
    now = time.time()
    summary = record_of(1, "summary", now - 3600, "bella", {"day": "2026-12-01", "battery": 71})
    ev = record_of(2, "event", now, "bella", {**event_body(), "start_ts": now - 7200, "ts": now})
    agg.handle_message(topics.status("collar-000"), schemas.encode(schemas.Status("collar-000", "online", now)))
    agg.handle_message(topics.uplink("collar-000"), schemas.encode(schemas.UplinkBatch("collar-000", (summary, ev))))
    agg.handle_message(topics.uplink("collar-001"), schemas.encode(schemas.UplinkBatch(
        "collar-001", (record_of(1, "summary", now, "max", {"day": "2026-12-01", "battery": 15}),))))
    st = individual_states(ReadModel(agg.store.backend))
    assert st["bella"]["battery"] == 71 and st["bella"]["alert"] == "ON" and st["bella"]["status"] == "alert"
    assert st["bella"]["last_alert"]["alert_id"] == "collar-000:2" and st["bella"]["last_alert_at"].endswith("+00:00")
    assert st["max"]["status"] == "offline" and st["max"]["battery"] == 15 and st["max"]["last_alert_at"] is None
    sent: list[tuple[str, bytes, bool]] = []
    bridge = HomeAssistantBridge(ReadModel(agg.store.backend), lambda t, p, retain=False: sent.append((t, p, retain)), every=1)
    bridge.tick()
    assert len([t for t, _, _ in sent if t.endswith("/config")]) == 10 and all(r for _, _, r in sent)
    bridge.tick()
    assert len(sent) == 12, "nothing changed: nothing published again"


@pytest.mark.mosquitto
def test_cloud_publishes_discovery_and_states(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    conf = tmp_path / "cloud.toml"
    conf.write_text("[home_assistant]\nenabled = true\nevery = 1.0\n")
    with open(tmp_path / "cloud.log", "w") as err:
        cloud = subprocess.Popen([*EDGELOOP, "cloud", "--config", str(conf), "--db", str(tmp_path / "c.db"),
                                  "--broker", mosquitto.url], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while "cloud.connected" not in (tmp_path / "cloud.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # subscriptions in place
        now = time.time()
        with Collector.connect(mosquitto, "dev") as dev:
            dev.publish_many([
                (topics.status("collar-000"), schemas.encode(schemas.Status("collar-000", "online", now))),
                (topics.uplink("collar-000"), schemas.encode(schemas.UplinkBatch("collar-000", (
                    record_of(1, "summary", now - 60, "bella", {"day": "2026-12-01", "battery": 64}),))))])
        with Collector.connect(mosquitto, "home-assistant") as ha:
            ha.subscribe("homeassistant/#")
            ha.subscribe("edgeloop/v1/ha/#")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(t.endswith("/state") for t, *_ in ha.messages):
                time.sleep(0.2)
            configs = {t: json.loads(p) for t, p, _, retained in ha.messages if t.endswith("/config")}
            assert len(configs) == 5
            with Collector.connect(mosquitto, "home-assistant-late") as late:
                late.subscribe("homeassistant/#")
                assert late.wait_for(5, timeout=10) and all(r for *_, r in late.messages), "configs are retained"
            for topic, cfg in configs.items():
                check_convention(topic, cfg)
            state = json.loads(next(p for t, p, *_ in ha.messages if t == state_topic("bella")))
            assert state["battery"] == 64 and state["status"] == "ok" and state["collar"] == "ON"
            n = len(ha.messages)
            ha.publish_many([("homeassistant/status", b"online")])  # Home Assistant restarted
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(ha.messages) < n + 5:
                time.sleep(0.2)
            assert sum(1 for t, *_ in ha.messages[n:] if t.endswith("/config")) == 5
    finally:
        cloud.send_signal(signal.SIGTERM)
        assert cloud.wait(30) == 0
