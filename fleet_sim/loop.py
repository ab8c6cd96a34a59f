"""The coordinator: fleet -> worker processes (real agents) -> broker -> real cloud -> owners.

``run_simulation(cfg)`` advances every individual in lock-step, ``step_hours`` at a time:

1. each worker feeds its agents the step's minutes; agents publish over MQTT and the cloud
   (``Aggregator`` + ``AggregatorService`` on a ``RecordClock``) stores, decides and acks;
   a step ends when every outbox row is acknowledged;
2. owners (``OwnerSim``, the aggregator's notifier) answer what was notified; their feedback due
   by the step's end is published on ``owner_feedback(individual)`` and handled by the cloud;
3. ``Aggregator.tick()`` (reminders, ignore sweep, personalisation commands), the rollout tick
   (``RolloutManager`` via ``ReleasePipeline``) and, at each simulated midnight, the retraining
   rules; every command goes out signed through ``cloud.commands.Commander``, and the next step
   starts only when each device has handled the commands sent to it.

Phases: until ``personalise_from_day`` the notification policy has no ``personalised`` rule and
personalisation config commands are held back (phase 1); from then on the rule is in force and
the held commands are sent (phase 2). All SQLite work of the cloud happens on this thread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import queue
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.aggregator.clock import RecordClock
from cloud.aggregator.handler import Aggregator
from cloud.aggregator.service import AggregatorService
from cloud.commands import Commander
from cloud.feedback.store import list_alerts
from cloud.retrain import load_retrain_config
from cloud.rules.notify import NotificationPolicy
from cloud.store.db import CloudStore
from fleet_sim.devices import WorkerSetup, worker_main
from fleet_sim.fleet import SimIndividual, build_fleet
from fleet_sim.owners import OwnerConfig, OwnerSim
from fleet_sim.pipeline import ReleasePipeline, sim_rollout_config
from shared import schemas, topics
from shared.mqtt import MqttConfig, connect_async, make_client
from shared.records import CommandReport
from shared.signing import generate_keypair, save_private_key, save_public_key

logger = logging.getLogger(__name__)
DAY = 86400.0
START_TS = 1767571200.0  # 2026-01-05 00:00 UTC, a midnight (as the demo)


@dataclass
class SimConfig:
    individuals: int = 100
    days: float = 60.0
    seed: int = 7
    step_hours: float = 6.0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    out: Path = Path("out/feedback_loop")
    broker_url: str = ""  # empty: start a private mosquitto on a free port
    personalise_from_day: float | None = None  # None: half way
    personalise: bool = True  # False: a control run, personalisation never switched on
    owners: OwnerConfig = field(default_factory=OwnerConfig)
    accel: bool = False  # accelerometer bursts in the collar stream (unused without the classifier)
    rules: str = ""  # notification rules TOML; empty: the packaged cloud/default_rules.toml
    score_rest: bool = False  # the collars also score hours at rest per day (AgentConfig.score_rest)
    progress: Callable[[str], None] | None = None

    @property
    def split_day(self) -> float:
        return self.days / 2 if self.personalise_from_day is None else self.personalise_from_day


class PrivateMosquitto:
    """A mosquitto on a free port with its own config (never the system broker)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> PrivateMosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_inflight_messages 100\nmax_queued_messages 100000\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "mosquitto.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}: see {self.dir}/mosquitto.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class GatedCommander:
    """Signs and sends through ``Commander``; holds personalisation config commands back while
    personalisation is off; counts commands per device (the lock-step waits for them)."""

    def __init__(self, inner: Commander) -> None:
        self.inner = inner
        self.personalise = False
        self.held: list[tuple[str, str, dict[str, Any], str]] = []
        self.sent: Counter[str] = Counter()
        self.by_name: Counter[str] = Counter()

    def send(self, device_id: str, name: str, args: dict[str, Any], reason: str = "",
             command_id: str = "") -> schemas.Command | None:
        if name == "config" and not self.personalise:
            self.held.append((device_id, name, args, reason))
            self.by_name["config_held"] += 1
            return None
        cmd = self.inner.send(device_id, name, args, reason, command_id=command_id)
        self.sent[device_id] += 1
        self.by_name[name] += 1
        return cmd

    def on_report(self, device_id: str, report: CommandReport) -> schemas.Command | None:
        return self.inner.on_report(device_id, report)  # re-sync requests (cloud/commands.py)

    def release_held(self) -> int:
        held, self.held = self.held, []
        self.personalise = True
        for dev, name, args, reason in held:
            self.send(dev, name, args, reason + " (held during phase 1)")
        return len(held)


@dataclass
class SimResult:
    cfg: SimConfig
    fleet: list[SimIndividual]
    store: CloudStore
    pipeline: ReleasePipeline
    owners: OwnerSim
    counts: dict[str, int]
    commands: dict[str, int]
    device_reports: dict[str, dict[str, Any]]
    appended: dict[str, int]
    config_replies: Counter[str]
    elapsed_s: float
    windows: int
    start_ts: float = START_TS


class _Cloud:
    """The aggregator as a service on the broker, driven from the coordinator's thread."""

    def __init__(self, cfg: SimConfig, url: str, owners: OwnerSim) -> None:
        out = cfg.out
        priv, pub = generate_keypair()
        save_private_key(out / "cloud.key", priv)
        save_public_key(out / "cloud.pub", pub)
        self.key = priv
        self.store = CloudStore(str(out / "cloud.db"))
        self.full_policy = NotificationPolicy.from_toml(cfg.rules or None)
        self.phase1_policy = dataclasses.replace(
            self.full_policy, rules=tuple(r for r in self.full_policy.rules if r.name != "personalised"))
        mqtt_cfg = MqttConfig(url=url)
        client = make_client(mqtt_cfg, "edgeloop-sim-cloud")

        def publish(topic: str, payload: bytes) -> None:
            client.publish(topic, payload, qos=1)

        self.clock = RecordClock()  # the simulation's time: the newest record's
        self.commander = GatedCommander(Commander(self.store, priv, publish, self.clock.now))
        self.agg = Aggregator(self.store, self.phase1_policy, publish=publish, notifiers=[owners],
                              commander=self.commander, clock=self.clock)
        self.svc = AggregatorService(self.agg, mqtt_cfg, "edgeloop-sim-cloud", shared_subscription=True,
                                     client=client)
        self.feedback_handled = 0

    def drain(self) -> int:
        n = 0
        while True:
            try:
                topic, payload = self.svc.inbox.get_nowait()
            except queue.Empty:
                return n
            self.agg.handle_message(topic, payload)
            if topic.startswith(f"{topics.ROOT}/owner/"):
                self.feedback_handled += 1
            n += 1


def run_simulation(cfg: SimConfig) -> SimResult:
    """Run the whole loop; returns everything the report needs (the store stays open)."""
    t_wall = time.monotonic()
    say = cfg.progress or (lambda s: None)
    out = cfg.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    fleet = build_fleet(cfg.individuals, cfg.days, cfg.seed)
    (out / "ground_truth.json").write_text(json.dumps(
        {s.individual_id: {"device_id": s.device_id, "quirk": s.quirk,
                           "episodes": [dataclasses.asdict(e) for e in s.episodes],
                           "conditions": [dataclasses.asdict(c) for c in s.ind.conditions]}
         for s in fleet}, indent=1))
    broker = None
    procs: list[Any] = []
    fb_client: Any = None
    cloud: _Cloud | None = None
    try:
        url = cfg.broker_url
        if not url:
            broker = PrivateMosquitto(out / "mosquitto").start()
            url = broker.url
        say(f"broker {url}; {len(fleet)} individuals x {cfg.days:g} days; {cfg.workers} worker processes")
        owners = OwnerSim(fleet, START_TS, cfg.owners, cfg.seed)
        cloud = _Cloud(cfg, url, owners)
        retrain_cfg = dataclasses.replace(load_retrain_config(),
                                          export=dataclasses.replace(load_retrain_config().export, dir=out / "retrain"))
        pipeline = ReleasePipeline(cloud.store, cloud.key, out, [s.device_id for s in fleet], retrain_cfg,
                                   sim_rollout_config(len(fleet)), START_TS,
                                       max_stage_days=max(4.0, cfg.days / 6))
        config_replies: Counter[str] = Counter()

        cloud.agg.rollouts = pipeline.mgr  # the aggregator routes replies/summaries to it and ticks it

        def on_report(device_id: str, rec: schemas.Record) -> None:
            body = rec.body
            if isinstance(body, CommandReport) and not body.command_id.startswith("rollout."):
                config_replies["ok" if body.ok else "failed: " + body.detail[:80]] += 1

        cloud.agg.on_report = on_report

        # workers first (spawned: no threads are forked), then the cloud's MQTT client
        nw = max(1, min(cfg.workers, len(fleet)))
        setup = WorkerSetup(START_TS, cfg.days, url, str(out / "cloud.pub"), pipeline.factory.bundle_path,
                            str(out / "devices"), accel=cfg.accel,
                            score_rest=cfg.score_rest)
        ctx = mp.get_context("spawn")
        conns: list[Any] = []
        for w in range(nw):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(child, setup, fleet[w::nw]), daemon=True)
            p.start()
            conns.append(parent)
            procs.append(p)
        cloud.svc.start()
        if not cloud.svc.connected.wait(15):
            raise RuntimeError(f"cloud could not connect to {url}")
        fb_client = make_client(MqttConfig(url=url), "edgeloop-sim-owners")
        connect_async(fb_client, MqttConfig(url=url))
        fb_client.loop_start()

        def wait_workers(kind: str) -> list[Any]:
            res: list[Any] = [None] * nw
            while any(r is None for r in res):
                cloud.drain()
                for i, c in enumerate(conns):
                    if res[i] is None and c.poll(0.002):
                        msg = c.recv()
                        if msg[0] != kind:
                            raise RuntimeError(f"worker {i}: expected {kind}, got {msg[0]}")
                        res[i] = msg
                for i, p in enumerate(procs):
                    if res[i] is None and not p.is_alive():
                        raise RuntimeError(f"worker {i} died (exit code {p.exitcode})")
            return res

        wait_workers("ready")
        step_s = cfg.step_hours * 3600.0
        n_steps = int(round(cfg.days * DAY / step_s))
        split_s = cfg.split_day * DAY
        fb_published = 0
        windows = 0
        for k in range(n_steps):
            until = (k + 1) * step_s
            now = START_TS + until
            expected = dict(cloud.commander.sent)
            for c in conns:
                c.send(("step", until, expected))
            for msg in wait_workers("done"):
                windows += msg[1]
            cloud.drain()
            cloud.clock.observe(now)  # every device has reported up to now
            owners.now = now

            def notified_in(ind: str, lo: float, hi: float) -> bool:
                return cloud.store.backend.execute(
                    "SELECT 1 FROM alerts WHERE individual_id = ? AND notified_at IS NOT NULL AND ts >= ? "
                    "AND ts <= ? LIMIT 1", [ind, lo, hi]).fetchone() is not None

            def held_in(ind: str, lo: float, hi: float) -> list[str]:
                return [a["alert_id"] for a in list_alerts(cloud.store, ind, since=lo)
                        if a["ts"] <= hi and a.get("notified_at") is None]

            owners.check_misses(now, notified_in, held_in)
            for fb in owners.due(now):
                fb_client.publish(topics.owner_feedback(fb.individual_id), schemas.encode(fb), qos=1)
                fb_published += 1
            deadline = time.monotonic() + 30
            while cloud.feedback_handled < fb_published and time.monotonic() < deadline:
                if not cloud.drain():
                    time.sleep(0.002)
            if cfg.personalise and until >= split_s and not cloud.commander.personalise:
                cloud.agg.policy = cloud.full_policy
                n = cloud.commander.release_held()
                say(f"day {until / DAY:g}: personalisation ON (rule 'personalised' in force, {n} held "
                    "config commands sent)")
            pipeline.tick(now)  # start a queued rollout, halt a stalled one
            cloud.agg.tick()  # reminders, ignore sweep, personalisation, rollout tick -> signed commands
            if until % DAY == 0:
                for r in pipeline.daily(now):
                    say(f"day {until / DAY:g}: RETRAIN request {r.id} ({r.rule}): {r.reason[:150]}")
            say(f"[{time.monotonic() - t_wall:6.0f} s] day {until / DAY:5.2f}/{cfg.days:g}  "
                f"stored {cloud.agg.counts['records_new']}  notified {cloud.agg.counts['decision.notify']}  "
                f"feedback {cloud.feedback_handled}  commands {sum(cloud.commander.sent.values())}")
        for c in conns:
            c.send(("finish",))
        reports: dict[str, dict[str, Any]] = {}
        for msg in wait_workers("finished"):
            reports.update(msg[1])
        for p in procs:
            p.join(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not cloud.drain():
                time.sleep(0.05)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        if fb_client is not None:
            fb_client.loop_stop()
            fb_client.disconnect()
        if cloud is not None:
            cloud.svc.stop()
        if broker is not None:
            broker.stop()
    appended = {d: sum(v for k, v in r["outbox"].items() if k.startswith("appended.")) for d, r in reports.items()}
    return SimResult(cfg, fleet, cloud.store, pipeline, owners, dict(cloud.agg.counts),
                     dict(cloud.commander.by_name), reports, appended, config_replies,
                     time.monotonic() - t_wall, windows)


def stderr_progress(msg: str) -> None:
    """Progress lines for the script (stderr)."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def save_result(res: SimResult) -> Path:
    """Pickle what the report needs besides cloud.db (``result.pkl`` in the output directory)."""
    import pickle

    state = {"cfg": dataclasses.replace(res.cfg, progress=None), "fleet": res.fleet, "counts": res.counts,
             "commands": res.commands, "device_reports": res.device_reports, "appended": res.appended,
             "config_replies": res.config_replies, "elapsed_s": res.elapsed_s, "windows": res.windows,
             "owner_counts": res.owners.counts, "candidates": res.pipeline.candidates,
             "retrain": res.pipeline.retrain, "start_ts": res.start_ts}
    path = res.cfg.out / "result.pkl"
    path.write_bytes(pickle.dumps(state))
    return path


def load_result(out: Path) -> SimResult:
    """A finished run from its output directory (for re-reporting without re-running)."""
    import pickle

    st = pickle.loads((out / "result.pkl").read_bytes())  # noqa: S301 - our own file
    store = CloudStore(str(out / "cloud.db"))
    pipe = ReleasePipeline.__new__(ReleasePipeline)
    pipe.store, pipe.candidates, pipe.retrain = store, st["candidates"], st["retrain"]
    owners = OwnerSim(st["fleet"], st["start_ts"], st["cfg"].owners, st["cfg"].seed)
    owners.counts = st["owner_counts"]
    cfg = dataclasses.replace(st["cfg"], out=out)
    return SimResult(cfg, st["fleet"], store, pipe, owners, st["counts"], st["commands"], st["device_reports"],
                     st["appended"], st["config_replies"], st["elapsed_s"], st["windows"], st["start_ts"])
