"""``edgeloop cloud``: build the aggregator from config and serve until stopped."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.aggregator.clock import Clock, WallClock
from cloud.aggregator.handler import Aggregator
from cloud.aggregator.service import AggregatorService
from cloud.commands import Commander
from cloud.config import CloudConfig
from cloud.delivery import build_deliveries
from cloud.notifiers import Notifier
from cloud.releases.factory import register_factory_release
from cloud.releases.rollout import RolloutManager
from cloud.retrain import RetrainConfig, load_retrain_config
from cloud.rules.notify import NotificationPolicy
from cloud.store import bindings
from cloud.store.backend import redact
from cloud.store.db import CloudStore
from shared.config import ConfigError
from shared.mqtt import make_client

logger = logging.getLogger(__name__)
REJECT_BATCH = 256  # rejections written together (and at least every second): a flood is not a commit each


@dataclass(frozen=True)
class CloudFiles:
    """What the cloud reads from files besides its TOML config, each checked."""

    policy: NotificationPolicy
    signing_key: Ed25519PrivateKey | None
    retrain: RetrainConfig


def load_files(cfg: CloudConfig) -> CloudFiles:
    """The rules, the signing key and the retraining rules, or a :class:`ConfigError` naming the
    file and the problem: ``edgeloop cloud --validate-config`` runs exactly this, as the cloud does."""
    policy = NotificationPolicy.from_toml(cfg.rules or None)
    key = None
    if cfg.signing_key:
        from shared.signing import SigningError, load_private_key

        try:
            key = load_private_key(Path(cfg.signing_key))
        except OSError as exc:
            raise ConfigError(f"signing_key: cannot read {cfg.signing_key} ({exc.strerror}): pass the "
                              "cloud.key written by `edgeloop cloud --keygen DIR`") from None
        except SigningError as exc:
            raise ConfigError(f"signing_key: {cfg.signing_key}: {exc}") from None
    return CloudFiles(policy, key, load_retrain_config(None))


def build(cfg: CloudConfig, client_suffix: str = "", notifiers: list[Notifier] | None = None,
          clock: Clock | None = None) -> AggregatorService:
    """The aggregator service of ``cfg``, every collaborator made first and handed to the
    aggregator's constructor. ``notifiers``: instead of the configured channels (the demo's
    recorder). ``clock``: the rules' time; a :class:`RecordClock` for replays and simulations
    (their periodic work then runs every tick, not every 5 wall seconds)."""
    files = load_files(cfg)  # before the store: a bad file leaves no database behind
    store = CloudStore(cfg.db or None)
    if cfg.devices:
        n = bindings.BindingRepository(store.backend).provision((d.device_id, d.individuals) for d in cfg.devices)
        logger.info("cloud.devices_provisioned", extra={"devices": len(cfg.devices), "new_bindings": n})
    client_id = cfg.client_id + client_suffix
    persistent = bool(cfg.instance)
    client = make_client(cfg.mqtt, client_id, persistent=persistent)

    def publish(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=1)

    live = clock is None
    clock = clock if clock is not None else WallClock()
    commander = rollouts = None
    if files.signing_key is not None:
        commander = Commander(store, files.signing_key, publish, clock.now)
        rollouts = RolloutManager(store)
        register_factory_release(store)
    if notifiers is None:  # the configured channels, each delivery recorded and retried
        notifiers = [build_deliveries(store.backend, cfg.notifiers, client.publish)]
    ha = None
    if cfg.home_assistant.enabled:
        from cloud.ops.homeassistant import HomeAssistantBridge
        from cloud.store.read_model import ReadModel

        ha = HomeAssistantBridge(ReadModel(store.backend), client.publish, cfg.home_assistant.prefix, cfg.home_assistant.every)
        notifiers = [*notifiers, ha]
    agg = Aggregator(store, files.policy, publish=publish, notifiers=notifiers, commander=commander, clock=clock,
                     rollouts=rollouts, retrain=files.retrain,
                     export_dir=str(Path(store.path).parent / "retrain") if store.path else None,
                     binding=cfg.binding, reject_batch=REJECT_BATCH,
                     # live: the periodic work (minute-scale reminders and sweeps) every 5 s, not every tick
                     periodic_every=5.0 if live else 0.0)
    svc = AggregatorService(agg, cfg.mqtt, client_id, cfg.shared_subscription,
                            persistent=persistent, instance=cfg.instance or None,
                            inbox_max=cfg.inbox_max, inbox_per_device=cfg.inbox_per_device,
                            inbox_max_bytes=int(cfg.inbox_max_mb * 2**20), client=client)
    if ha is not None:
        bridge = ha
        svc.extra_subscriptions[f"{cfg.home_assistant.prefix}/status"] = (
            lambda payload: bridge.rediscover() if payload.strip() == b"online" else None)
    return svc


def serve_forever(cfg: CloudConfig, stop: threading.Event) -> int:
    """Serve until ``stop``; 0 on a clean stop, 1 when another process took our client id."""
    svc = build(cfg)
    web = start_web(svc, cfg) if cfg.http else None
    svc.start()
    print(f"edgeloop cloud {svc.client_id}: serving {cfg.mqtt.url}, store {redact(cfg.db)}"
          + (f", http://{web.host}:{web.port}/" if web else ""), flush=True)
    stats = StatsLine(svc)
    worker = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    worker.start()
    try:
        while not stop.wait(1.0):
            if svc.taken_over.is_set():
                return 1
            if cfg.stats_every > 0 and stats.due(cfg.stats_every):
                stats.log()
    finally:
        worker.join(5)
        svc.agg.release_leases()
        svc.stop()
        if web is not None:
            web.stop()
        for n in svc.agg.notifiers:
            close = getattr(n, "close", None)
            if close is not None:
                close()
    return 0


def start_web(svc: AggregatorService, cfg: CloudConfig) -> Any:
    """The operators' web server (imported only when --http is given)."""
    import os

    from cloud.ops.web import WebServer, create_app, parse_listen

    host, port = parse_listen(cfg.http)
    token = os.environ.get(cfg.operator_token_env) if cfg.operator_token_env else None
    return WebServer(create_app(svc, cfg.db or None, operator_token=token), host, port).start()


class StatsLine:
    """The periodic ``cloud.stats`` line: totals since start plus the rate over the last interval."""

    def __init__(self, svc: AggregatorService) -> None:
        self.svc = svc
        self.t0 = self.last = time.monotonic()
        self.last_received = 0

    def due(self, every: float) -> bool:
        return time.monotonic() - self.last >= every

    def fields(self) -> dict[str, float | int | bool]:
        now = time.monotonic()
        svc, c = self.svc, self.svc.agg.counts
        rate = (svc.received - self.last_received) / max(now - self.last, 1e-9)
        self.last, self.last_received = now, svc.received
        out: dict[str, float | int | bool] = {
            "uptime_s": round(now - self.t0), "connected": svc.connected.is_set(), "messages": svc.received,
            "messages_per_s": round(rate, 2), "inbox": svc.inbox.qsize(),
            "inbox_dropped": sum(svc.inbox.dropped.values()),
            "records_new": c["records_new"], "records_duplicate": c["records_duplicate"],
            "rejected": c["rejected"], "feedback": c["feedback"], "retained_refused": svc.retained_refused}
        for key, n in sorted(c.items()):
            if key.startswith(("decision.", "commands.", "reports.")):
                out[key.replace(".", "_")] = n
        sent = sum(getattr(n, "sent", 0) for n in svc.agg.notifiers)
        failed = sum(getattr(n, "failures", 0) for n in svc.agg.notifiers)
        out.update(notifications_sent=sent, notifications_failed=failed)
        return out

    def log(self) -> None:
        logger.info("cloud.stats", extra=self.fields())
