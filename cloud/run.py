"""``edgeloop cloud``: build the aggregator from config and serve until stopped."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from cloud.aggregator.handler import Aggregator
from cloud.aggregator.service import AggregatorService
from cloud.commands import Commander
from cloud.config import CloudConfig
from cloud.notifiers import LogNotifier, Notifier
from cloud.releases.factory import register_factory_release
from cloud.releases.rollout import RolloutManager
from cloud.retrain import load_retrain_config
from cloud.rules.notify import NotificationPolicy
from cloud.store.db import CloudStore

logger = logging.getLogger(__name__)


def build(cfg: CloudConfig, client_suffix: str = "", notifiers: list[Notifier] | None = None,
          sim_clock: bool = False) -> AggregatorService:
    store = CloudStore(cfg.db or None)
    policy = NotificationPolicy.from_toml(cfg.rules or None)
    agg = Aggregator(store, policy, notifiers=notifiers if notifiers is not None else [LogNotifier()],
                     sim_clock=sim_clock)
    svc = AggregatorService(agg, cfg.mqtt, f"edgeloop-{cfg.instance}{client_suffix}", cfg.shared_subscription)
    if cfg.signing_key:
        from shared.signing import load_private_key

        agg.commander = Commander(store, load_private_key(Path(cfg.signing_key)), svc.publish, agg.now)
        agg.rollouts = RolloutManager(store)
        register_factory_release(store)
    agg.retrain = load_retrain_config(None)
    agg.export_dir = str(Path(cfg.db).parent / "retrain") if cfg.db else None
    return svc


def serve_forever(cfg: CloudConfig, stop: threading.Event) -> None:
    svc = build(cfg)
    svc.start()
    print(f"edgeloop cloud {cfg.instance}: serving {cfg.mqtt.url}, store {cfg.db}", flush=True)
    last = time.monotonic()
    worker = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    worker.start()
    try:
        while not stop.wait(1.0):
            if time.monotonic() - last > 60:
                logger.info("cloud.stats", extra=dict(svc.agg.counts))
                last = time.monotonic()
    finally:
        worker.join(5)
        svc.stop()
