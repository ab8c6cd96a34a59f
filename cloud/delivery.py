"""Notifications that reach people: every alert goes to every configured channel (webhook, MQTT
``owner/<id>/alerts``, the log), each delivery is a row with its outcome, and a failed one is
retried with backoff until it lands or is given up.

Threads: the aggregator's thread calls :meth:`Deliveries.send` (records one ``pending`` row per
channel) and :meth:`Deliveries.tick` (writes outcomes, schedules retries); one worker thread does
the network I/O and never touches the store, so a slow webhook cannot hold up message handling.
Rows left ``pending``/``retrying`` by a stopped process are sent again at the next start
(at-least-once: a webhook receiver may see an ``alert_id`` twice and should dedupe on it).

The rows and their SQL: ``cloud.store.deliveries``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloud.config import NotifierConfig
from cloud.notifiers import DeliveryError, WebhookNotifier, encode_alert
from cloud.rules.notify import Decision
from cloud.store.backend import Backend
from cloud.store.deliveries import CLAIM_S, DeliveryRepository
from shared import topics

logger = logging.getLogger(__name__)
OPEN_STATES = ("pending", "retrying")
__all__ = ["CLAIM_S", "Channel", "Deliveries", "build_deliveries", "channel_from_config"]


@dataclass
class Channel:
    """One configured notifier: how to deliver one payload, and its retry policy."""

    name: str
    kind: str
    deliver: Callable[[str, bytes], None]  # (individual_id, payload) -> None, raises DeliveryError
    retries: int = 5
    backoff: float = 30.0
    backoff_max: float = 3600.0

    def delay(self, attempts: int) -> float:
        """Seconds before retry number ``attempts`` (1-based): backoff, doubling, capped."""
        return float(min(self.backoff * 2 ** (attempts - 1), self.backoff_max))


def _log_deliver(individual_id: str, payload: bytes) -> None:
    logger.info("notify.sent", extra={"channel": "log", "individual_id": individual_id,
                                      "payload": payload.decode()})


def _mqtt_deliver(publish: Callable[[str, bytes], Any]) -> Callable[[str, bytes], None]:
    def deliver(individual_id: str, payload: bytes) -> None:
        info = publish(topics.owner_alerts(individual_id), payload)
        rc = getattr(info, "rc", 0)
        if rc:
            raise DeliveryError(f"broker not reachable (paho rc {rc}): the alert stays queued for retry")
    return deliver


def _env(name: str, what: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{what}: environment variable {name} is empty or unset")
    return value


def channel_from_config(cfg: NotifierConfig, publish: Callable[[str, bytes], Any] | None) -> Channel:
    """Build one channel; ValueError names a missing secret or a missing MQTT client."""
    if cfg.kind == "webhook":
        token = _env(cfg.token_env, f"notifier {cfg.label} token_env")
        headers = {**cfg.headers, **({"Authorization": f"Bearer {token}"} if token else {})}
        hook = WebhookNotifier(cfg.url, timeout=cfg.timeout, headers=headers,
                               hmac_secret=_env(cfg.hmac_secret_env, f"notifier {cfg.label} hmac_secret_env"))
        deliver: Callable[[str, bytes], None] = lambda _ind, payload: hook.deliver(payload)  # noqa: E731
    elif cfg.kind == "mqtt":
        if publish is None:
            raise ValueError(f"notifier {cfg.label}: an mqtt notifier needs the aggregator's MQTT client")
        deliver = _mqtt_deliver(publish)
    else:
        deliver = _log_deliver
    return Channel(cfg.label, cfg.kind, deliver, cfg.retries, cfg.backoff, cfg.backoff_max)


class Deliveries:
    """The aggregator's notifier: one recorded, retried delivery per channel per alert."""

    def __init__(self, backend: Backend, channels: Sequence[Channel], clock: Callable[[], float] = time.time) -> None:
        self.log = DeliveryRepository(backend)
        self.channels = {c.name: c for c in channels}
        self.clock = clock
        self.counts: Counter[str] = Counter()  # "<channel>.sent" / ".failed" (attempts) / ".gave_up"
        self.sent = 0
        self.failures = 0
        self._jobs: queue.Queue[tuple[int, str, str, bytes, int] | None] = queue.Queue()
        self._results: queue.Queue[tuple[int, str, str, int, str | None, float]] = queue.Queue()
        self._busy: set[int] = set()
        self._worker = threading.Thread(target=self._work, name="edgeloop-deliveries", daemon=True)
        self._worker.start()
        self.tick()  # rows left open (retries due; attempts of a process that died, once their claim expired)

    # aggregator thread ----------------------------------------------------------------------------
    def send(self, decision: Decision, event_body: dict[str, Any]) -> None:
        payload = encode_alert(decision, event_body)
        now = self.clock()
        for ch in self.channels.values():
            row_id = self.log.add(decision.alert_id, decision.individual_id, ch.name, ch.kind, payload.decode(), now)
            self._queue(row_id, ch.name, decision.individual_id, payload, 1)

    def _queue(self, row_id: int, channel: str, individual_id: str, payload: bytes, attempt: int) -> None:
        self._busy.add(row_id)
        self._jobs.put((row_id, channel, individual_id, payload, attempt))

    def tick(self) -> None:
        """Record what the worker finished (in one transaction); queue retries that are due."""
        done = []
        while True:
            try:
                done.append(self._results.get_nowait())
            except queue.Empty:
                break
        if done:
            with self.log.transaction():
                for row_id, channel, alert_individual, attempt, error, took in done:
                    self._busy.discard(row_id)
                    self._record(row_id, channel, alert_individual, attempt, error, took)
        for row in self.log.due(self.clock(), self._busy):
            if row["channel"] not in self.channels:  # a channel removed from the config
                self.log.outcome(row["id"], "failed", row["attempts"], "channel no longer configured", 0, self.clock())
                continue
            if not self.log.claim(row["id"], self.clock()):  # another aggregator took it first
                continue
            self._queue(row["id"], row["channel"], row["individual_id"], row["payload"].encode(), row["attempts"] + 1)

    def _record(self, row_id: int, channel: str, individual_id: str, attempt: int, error: str | None,
                took: float) -> None:
        now = self.clock()
        ch = self.channels.get(channel)
        if error is None:
            self.sent += 1
            self.counts[f"{channel}.sent"] += 1
            self.log.outcome(row_id, "sent", attempt, "", 0.0, now)
            logger.info("notify.delivered", extra={"channel": channel, "delivery_id": row_id,
                                                   "individual_id": individual_id, "attempt": attempt,
                                                   "seconds": round(took, 3)})
            return
        self.failures += 1
        self.counts[f"{channel}.failed"] += 1
        if ch is not None and attempt <= ch.retries:
            wait = ch.delay(attempt)
            self.log.outcome(row_id, "retrying", attempt, error, now + wait, now)
            logger.warning("notify.failed", extra={"channel": channel, "delivery_id": row_id,
                                                   "individual_id": individual_id, "attempt": attempt,
                                                   "error": error, "retry_in_s": round(wait, 1)})
        else:
            self.counts[f"{channel}.gave_up"] += 1
            self.log.outcome(row_id, "failed", attempt, error, 0.0, now)
            logger.error("notify.gave_up", extra={"channel": channel, "delivery_id": row_id,
                                                  "individual_id": individual_id, "attempts": attempt,
                                                  "error": error})

    def close(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._worker.join(timeout)
        self.tick_results_only()

    def tick_results_only(self) -> None:
        while True:
            try:
                row_id, channel, ind, attempt, error, took = self._results.get_nowait()
            except queue.Empty:
                return
            self._busy.discard(row_id)
            self._record(row_id, channel, ind, attempt, error, took)

    # worker thread --------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            row_id, channel, individual_id, payload, attempt = job
            ch = self.channels.get(channel)
            t0 = time.monotonic()
            error: str | None = None
            try:
                if ch is None:
                    raise DeliveryError("channel no longer configured")
                ch.deliver(individual_id, payload)
            except DeliveryError as exc:
                error = str(exc)
            except Exception as exc:  # a transport broke its contract: a failed attempt, not a dead worker
                error = f"{type(exc).__name__}: {exc}"
            self._results.put((row_id, channel, individual_id, attempt, error, time.monotonic() - t0))


def build_deliveries(backend: Backend, configs: Sequence[NotifierConfig],
                     publish: Callable[[str, bytes], Any] | None) -> Deliveries:
    """The aggregator's notifier over the store's back end, one channel per configured notifier."""
    return Deliveries(backend, [channel_from_config(c, publish) for c in configs])
