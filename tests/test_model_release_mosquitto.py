"""Model releases on a simulated device over real mosquitto: a signed bundle pushed from the cloud
runs in shadow, is promoted and rolled back; tampered or foreign bundles are refused and reported."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest

from cloud.config import CloudConfig
from cloud.run import build
from device.agent import Agent
from device.config import AgentConfig
from device.inference.classifier import FACTORY_MODEL, load_manifest
from firmware_sim.collar import CollarSim
from firmware_sim.scenario import DEMO_START, default_fleet
from shared.bundles import build_bundle
from shared.mqtt import MqttConfig
from shared.signing import generate_keypair, save_private_key, save_public_key


def wait_for(pred, timeout: float = 20.0, pump=None) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pump:
            pump()
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.timeout(120)
def test_push_shadow_promote_rollback_over_mqtt(tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    priv, pub = generate_keypair()
    save_private_key(tmp_path / "cloud.key", priv)
    save_public_key(tmp_path / "cloud.pub", pub)
    mq = MqttConfig(url=mosquitto.url)
    svc = build(CloudConfig(db=str(tmp_path / "cloud.db"), mqtt=mq, signing_key=str(tmp_path / "cloud.key")),
                notifiers=[])
    svc.start()
    assert svc.connected.wait(10)
    stop = threading.Event()
    threading.Thread(target=svc.serve, args=(stop,), daemon=True).start()

    agent = Agent(AgentConfig(device_id="collar-000", individual_id="bella", state_dir=str(tmp_path / "dev"),
                              cloud_public_key=str(tmp_path / "cloud.pub"), mqtt=mq))
    assert agent.releases.slots is not None
    factory_sha = agent.releases.classifier.sha256
    agent.uplink.start()  # type: ignore[union-attr]
    assert wait_for(lambda: agent.uplink.connected, pump=agent.pump)  # type: ignore[union-attr]

    meta = load_manifest()["model"]
    model = FACTORY_MODEL.read_bytes() + b""  # same weights, a new signed version
    bundle = build_bundle(model, {"threshold": 1.0}, name="activity", version=2, private_key=priv,
                          device_class="collar", model_meta=meta)
    cmd = svc.agg.commander
    # commands are bound to the device's incarnation: the cloud learns it from the status on connect
    assert wait_for(lambda: cmd.incarnation("collar-000") == agent.outbox.incarnation, pump=agent.pump)
    sim = CollarSim(default_fleet(1, 1.0)[0], DEMO_START, 1.0)
    chunks = iter(sim.chunks())

    def reports() -> list[dict]:  # type: ignore[type-arg]
        return [r["body"] for r in svc.agg.store.records("report")]

    def step() -> None:  # the device keeps working while commands arrive
        for _ in range(5):
            t, data = next(chunks)
            agent.feed(data)
        agent.pump()

    cmd.send("collar-000", "install_shadow", {"bundle_b64": base64.b64encode(bundle).decode()})
    assert wait_for(lambda: len(reports()) == 1, pump=step), reports()
    assert reports()[0]["ok"], reports()[0]
    assert agent.releases.slots.status()["shadow"]["version"] == 2
    assert agent.releases.shadow_stats.total > 0 or wait_for(lambda: agent.releases.shadow_stats.total > 0, pump=step)
    assert agent.releases.shadow_stats.agreement == 1.0, "identical weights agree on every window"

    cmd.send("collar-000", "promote", {})
    assert wait_for(lambda: len(reports()) == 2, pump=step)
    assert reports()[1]["ok"] and agent.releases.slots.status()["active"]["version"] == 2
    assert agent.releases.model_version == agent.releases.classifier.sha256[:12]

    cmd.send("collar-000", "rollback", {"promoted": True})
    assert wait_for(lambda: len(reports()) == 3, pump=step)
    assert reports()[2]["ok"] and agent.releases.slots.status()["active"]["slot"] == "factory"
    assert agent.releases.classifier.sha256 == factory_sha

    # refused: tampered bundle, a bundle signed by another key, and a downgrade below the active
    other, _ = generate_keypair()
    tampered = bytearray(bundle)
    tampered[len(tampered) // 2] ^= 0x40
    foreign = build_bundle(model, {}, name="activity", version=3, private_key=other, device_class="collar",
                           model_meta=meta)
    for b in (bytes(tampered), foreign):
        cmd.send("collar-000", "install_shadow", {"bundle_b64": base64.b64encode(b).decode()})
    assert wait_for(lambda: len(reports()) == 5, pump=step)
    assert [r["ok"] for r in reports()[3:]] == [False, False]
    assert agent.releases.slots.status()["shadow"] is None and agent.releases.slots.status()["active"]["slot"] == "factory"
    assert svc.agg.counts["reports.failed"] == 2

    agent.uplink.stop()  # type: ignore[union-attr]
    stop.set()
    svc.stop()


def test_targeted_rollback_never_downgrades_an_uninvolved_device(tmp_path: Path) -> None:
    priv, pub = generate_keypair()
    save_public_key(tmp_path / "cloud.pub", pub)
    agent = Agent(AgentConfig(device_id="collar-000", state_dir=str(tmp_path / "dev"),
                              cloud_public_key=str(tmp_path / "cloud.pub")), connect=False)
    meta = load_manifest()["model"]
    model = FACTORY_MODEL.read_bytes()
    v2 = build_bundle(model, {}, name="activity", version=2, private_key=priv, device_class="collar", model_meta=meta)
    agent.releases.install_shadow({"bundle_b64": base64.b64encode(v2).decode()})
    agent.releases.promote({})
    # a rollback of release v3 (which this device never installed) must leave v2 active
    out = agent.releases.rollback({"name": "activity", "version": 3, "promoted": True})
    assert out["undone"] is None and agent.releases.slots.status()["active"]["version"] == 2  # type: ignore[union-attr]
    agent.releases.rollback({"name": "activity", "version": 2})
    assert agent.releases.slots.status()["active"]["slot"] == "factory"  # type: ignore[union-attr]


def test_a_release_detector_config_takes_effect_on_the_device(tmp_path: Path) -> None:
    from device.detect.engine import DeviationEvent

    priv, pub = generate_keypair()
    save_public_key(tmp_path / "cloud.pub", pub)
    agent = Agent(AgentConfig(device_id="collar-000", state_dir=str(tmp_path / "dev"),
                              cloud_public_key=str(tmp_path / "cloud.pub")), connect=False)
    before = agent.releases.detector_version
    bundle = build_bundle(FACTORY_MODEL.read_bytes(), {"min_score": 0.6, "cusum_h": 6.0}, name="activity",
                          version=2, private_key=priv, device_class="collar", model_meta=load_manifest()["model"])
    agent.releases.install_shadow({"bundle_b64": base64.b64encode(bundle).decode()})
    out = agent.releases.promote({})
    assert agent.engine.config.cusum_h == 6.0 and out["detector_version"] != before

    def event(score: float) -> DeviationEvent:
        return DeviationEvent(1.0, 2.0, ("resting_hr",), (1,), score, "warning", "sustained", (60.0,), (75.0,))

    agent.records.event(event(0.5), agent.releases, agent.trace)
    agent.records.event(event(0.7), agent.releases, agent.trace)
    sent = [r.body["score"] for r in agent.outbox.due(10) if r.kind == "event"]
    assert sent == [0.7] and agent.counts["events_below_gate"] == 1
    agent.releases.rollback({"name": "activity", "version": 2})
    assert agent.releases.gate is None and agent.engine.config.cusum_h == 12.0
