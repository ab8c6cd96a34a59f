"""A trace knows its kind (issue 16): the device-info frame names kind and id, the agent and
``replay trace`` take them from the stream, ``--kind`` only overrides; old traces still read."""

from __future__ import annotations

import json
from pathlib import Path

from device.agent import Agent
from device.config import AgentConfig
from device.identity import INFO_SCHEMA, read_trace_info
from device.profiles import CollarProfile, PerceptionProfile
from edgeloop.cli import main
from firmware_sim.perception import PerceptionSim, default_unit
from firmware_sim.scenario import DEMO_START
from shared.frames import Frame, encode_frame
from shared.payloads import DeviceInfo, encode_payload


def _pi_trace(path: Path, days: float = 0.3) -> Path:
    sim = PerceptionSim(default_unit(days), DEMO_START, days)
    path.write_bytes(b"".join(c for _, c in sim.chunks()) + sim.end_frame())
    return path


def _v1_info(info: dict[str, str]) -> bytes:
    """A device-info frame as schema-1 firmware wrote it (no ``schema`` key)."""
    sensor, payload = encode_payload(DeviceInfo(info))
    return encode_frame(Frame(sensor, 1, int(DEMO_START * 1000), payload))


def test_the_sim_writes_a_schema_2_device_info_frame_naming_kind_and_id(tmp_path: Path) -> None:
    info = read_trace_info(_pi_trace(tmp_path / "pi.bin"))
    assert info is not None and info["schema"] == str(INFO_SCHEMA) == "2"
    assert (info["kind"], info["device_id"]) == ("perception", "pi-000")


def test_replay_trace_with_no_flags_runs_a_perception_trace_as_a_pi(tmp_path: Path) -> None:
    trace = _pi_trace(tmp_path / "pi.bin")
    assert main(["replay", "trace", str(trace), "--out", str(tmp_path / "r")]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (s["kind"], s["device_id"], s["individual_id"]) == ("perception", "pi-000", "gate-cam")


def test_agent_takes_kind_and_id_from_the_trace_and_kind_only_overrides(tmp_path: Path) -> None:
    trace = _pi_trace(tmp_path / "pi.bin")
    a = Agent(AgentConfig(source=str(trace), state_dir=str(tmp_path / "a"), exit_on_eof=True), connect=False)
    assert isinstance(a.profile, PerceptionProfile) and a.cfg.device_id == "pi-000"
    a.run()
    assert a.counts["windows"] > 400 and a.counts["device_kind_mismatch"] == 0
    # an explicit --kind wins; the disagreement is counted, never silently scored as the other kind
    b = Agent(AgentConfig(source=str(trace), kind="collar", device_id="x-1", state_dir=str(tmp_path / "b"),
                          exit_on_eof=True), classifier=None, connect=False)
    assert isinstance(b.profile, CollarProfile) and b.cfg.device_id == "x-1"
    b.run()
    assert b.counts["device_kind_mismatch"] == 1


def test_a_serial_stream_teaches_the_kind_before_its_first_window(tmp_path: Path) -> None:
    a = Agent(AgentConfig(state_dir=str(tmp_path / "s")), connect=False)  # no file to read ahead
    assert isinstance(a.profile, CollarProfile)
    sim = PerceptionSim(default_unit(0.05), DEMO_START, 0.05)
    a.feed(b"".join(c for _, c in sim.chunks()))
    assert isinstance(a.profile, PerceptionProfile) and a.counts["kind_from_stream"] == 1
    assert a.engine.metrics == a.profile.metrics and a.counts["windows"] > 10


def test_an_old_schema_1_trace_still_reads(tmp_path: Path) -> None:
    """Schema 1: no ``schema`` key; a collar's frame may not name its kind."""
    sim = PerceptionSim(default_unit(0.2), DEMO_START, 0.2)
    chunks = [c for _, c in sim.chunks()][1:]  # drop the schema-2 device-info frame
    old = tmp_path / "old-pi.bin"
    old.write_bytes(_v1_info({"device_id": "pi-007", "kind": "perception", "individual_id": "yard"})
                    + b"".join(chunks) + sim.end_frame())
    a = Agent(AgentConfig(source=str(old), state_dir=str(tmp_path / "a"), exit_on_eof=True), connect=False)
    a.run()
    assert (a.profile.kind, a.cfg.device_id, a.individual_id) == ("perception", "pi-007", "yard")
    bare = tmp_path / "old-collar.bin"
    bare.write_bytes(_v1_info({"individual_id": "rex"}))
    c = Agent(AgentConfig(source=str(bare), state_dir=str(tmp_path / "c")), classifier=None, connect=False)
    assert (c.profile.kind, c.cfg.device_id) == ("collar", "collar-000")


def test_a_pi_run_without_any_id_is_not_collar_000(tmp_path: Path) -> None:
    a = Agent(AgentConfig(kind="perception", state_dir=str(tmp_path / "p")), connect=False)
    assert a.cfg.device_id == "pi-000"
