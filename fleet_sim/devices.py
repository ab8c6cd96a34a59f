"""The device side of the simulation: real agents in worker processes, advanced in lock-step.

Each worker process owns some individuals: per individual a ``QuirkCollarSim`` byte stream and a
``SimAgent`` (the real ``device.agent.Agent``: frames -> minute windows -> Numba engine -> SQLite
outbox -> its own MQTT connection). The coordinator sends ``("step", until_s, expected)``: the
worker first waits until every agent has handled the commands the cloud sent it so far
(``expected``: device id -> count), then feeds each agent its minutes up to ``until_s``, and
returns once every outbox row is acknowledged by the cloud (so the cloud holds all of it).

``SimAgent`` adds model-release handlers (``install_shadow``, ``promote``, ``rollback``): the
bundle (base64 in the command, signature checked with ``shared.bundles.read_bundle``) carries a
detector config that the agent's own ``apply_detector_config`` applies: its alert gate
(``shared.alert_gate``: ``min_score``, ``metric_thresholds``) filters events, its engine keys
(fields of ``EngineConfig``, e.g. ``cusum_h``) re-configure the engine, keeping its learned state.
Events are stamped with the active release's model sha256[:12], as the agent does for its
classifier. These handlers replace the agent's slot handlers, which swap the TFLite classifier
and need it per window (too slow for millions of simulated windows).
"""

from __future__ import annotations

import base64
import logging
import multiprocessing.connection
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device.agent import AGENT_VERSION, Agent
from device.config import AgentConfig, OutboxConfig
from fleet_sim.fleet import QuirkCollarSim, SimIndividual
from shared.bundles import Bundle, read_bundle
from shared.mqtt import MqttConfig
from shared.signing import load_public_key

logger = logging.getLogger(__name__)
DEVICE_CLASS = "collar"


@dataclass(frozen=True)
class Release:
    name: str
    version: int
    sha256: str
    detector: dict[str, Any]


def release_of(bundle: Bundle) -> Release:
    m = bundle.manifest
    return Release(m.name, m.version, m.sha256, dict(bundle.detector_config))


class SimAgent(Agent):
    """The real agent, plus release slots whose detector config gates and tunes detection."""

    def __init__(self, cfg: AgentConfig, factory_bundle: bytes) -> None:
        super().__init__(cfg, classifier=None, connect=True)
        self._pub = load_public_key(Path(cfg.cloud_public_key))
        base = read_bundle(factory_bundle, self._pub, running_version=0, device_class=DEVICE_CLASS,
                           agent_version=AGENT_VERSION)
        self.active: Release = release_of(base)
        self.shadow_release: Release | None = None
        self.previous: Release | None = None
        self._apply(self.active)
        for name, fn in (("install_shadow", self._rel_install), ("promote", self._rel_promote),
                         ("rollback", self._rel_rollback)):
            self.commands.register(name, fn)

    # ---- releases ------------------------------------------------------------------------------
    def _apply(self, rel: Release) -> None:
        self.apply_detector_config(rel.detector)  # the agent's own: engine keys and alert gate
        self.releases.model_version = rel.sha256[:12]

    def _rel_install(self, args: dict[str, Any]) -> dict[str, Any]:
        data = base64.b64decode(str(args.get("bundle_b64", "")), validate=True)
        if not data:
            raise ValueError("install_shadow needs bundle_b64 (the signed bundle)")
        b = read_bundle(data, self._pub, running_version=self.active.version,
                        device_class=DEVICE_CLASS, agent_version=AGENT_VERSION)
        if args.get("sha256") and args["sha256"] != b.manifest.sha256:
            raise ValueError(f"bundle sha256 {b.manifest.sha256[:12]} is not the announced "
                             f"{str(args['sha256'])[:12]}")
        self.shadow_release = release_of(b)
        return {"installed": b.manifest.name, "version": b.manifest.version}

    def _rel_promote(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.shadow_release is None:
            raise ValueError("no shadow model to promote; install a bundle first")
        self.previous, self.active, self.shadow_release = self.active, self.shadow_release, None
        self._apply(self.active)
        self.save_state()
        return {"model_version": self.releases.model_version, "version": self.active.version}

    def _rel_rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("promoted", True):
            self.shadow_release = None
            return {"model_version": self.releases.model_version, "discarded_shadow": True}
        if self.previous is None:
            raise ValueError("nothing to roll back to")
        self.active, self.previous = self.previous, None
        self._apply(self.active)
        self.save_state()
        return {"model_version": self.releases.model_version, "version": self.active.version}

    @property
    def handled(self) -> int:
        return sum(self.commands.counts.values())


@dataclass(frozen=True)
class WorkerSetup:
    start_ts: float
    days: float
    broker_url: str
    public_key_path: str
    factory_bundle_path: str
    state_root: str
    pump_every_min: int = 60
    accel: bool = False
    score_rest: bool = False


def _pump_until(agents: list[SimAgent], done: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for a in agents:
            a.pump()
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker: timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.003)


def worker_main(conn: multiprocessing.connection.Connection, setup: WorkerSetup,
                individuals: list[SimIndividual]) -> None:
    """Process entry: build agents, then serve step/finish requests from the coordinator."""
    logging.basicConfig(level=logging.WARNING)
    factory = Path(setup.factory_bundle_path).read_bytes()
    agents: dict[str, SimAgent] = {}
    streams: dict[str, Any] = {}
    pending: dict[str, tuple[float, bytes] | None] = {}
    for s in individuals:
        cfg = AgentConfig(device_id=s.device_id, individual_id=s.individual_id,
                          state_dir=str(Path(setup.state_root) / s.device_id), score_rest=setup.score_rest,
                          cloud_public_key=setup.public_key_path,
                          mqtt=MqttConfig(url=setup.broker_url),
                          outbox=OutboxConfig(resend_after=60.0, batch_size=20 if setup.accel else 50))
        a = SimAgent(cfg, factory)
        assert a.uplink is not None
        a.uplink.start()
        agents[s.device_id] = a
        streams[s.device_id] = iter(QuirkCollarSim(s, setup.start_ts, setup.days, setup.accel).chunks())
        pending[s.device_id] = None
    alist = list(agents.values())
    _pump_until(alist, lambda: all(a.uplink is not None and a.uplink.connected for a in alist), 30,
                "MQTT connections")
    conn.send(("ready", len(alist)))
    while True:
        msg = conn.recv()
        if msg[0] == "step":
            _, until_s, expected = msg
            want = {d: n for d, n in expected.items() if d in agents}
            _pump_until(alist, lambda w=want: all(agents[d].handled >= n for d, n in w.items()),  # type: ignore[misc]
                        60, "commands to arrive")
            windows = 0
            for dev, a in agents.items():
                it = streams[dev]
                n = 0
                while True:
                    item = pending[dev] or next(it, None)
                    pending[dev] = None
                    if item is None:
                        break
                    t, data = item
                    if t >= until_s:
                        pending[dev] = item
                        break
                    a.feed(data)
                    n += 1
                    if n % setup.pump_every_min == 0:
                        a.pump()
                windows += n
                a.pump()
            _pump_until(alist, lambda: not any(a.outbox.pending_count() for a in alist), 120,
                        "the cloud to acknowledge every row")
            conn.send(("done", windows, {d: dict(a.counts) for d, a in agents.items()}))
        elif msg[0] == "finish":
            for a in alist:
                a.finish()
            _pump_until(alist, lambda: not any(a.outbox.pending_count() for a in alist), 120,
                        "the final rows to be acknowledged")
            reports = {d: {**a.report(), "active_version": a.active.version,
                           "active": asdict(a.active)} for d, a in agents.items()}
            for a in alist:
                a.save_state()
                if a.uplink is not None:
                    a.uplink.stop()
            conn.send(("finished", reports))
            return
