"""Notifications that reach people: every alert goes to every configured channel (webhook, MQTT
``owner/<id>/alerts``, the log), each delivery is a row with its outcome, and a failed one is
retried with backoff until it lands or is given up.

Threads: the aggregator's thread calls :meth:`Deliveries.send` (records one ``pending`` row per
channel) and :meth:`Deliveries.tick` (writes outcomes, schedules retries); one worker thread does
the network I/O and never touches SQLite, so a slow webhook cannot hold up message handling.
Rows left ``pending``/``retrying`` by a stopped process are sent again at the next start
(at-least-once: a webhook receiver may see an ``alert_id`` twice and should dedupe on it).

Table ``deliveries``: id, alert_id, individual_id, channel, kind, state (pending | retrying | sent |
failed), attempts, last_error, created_at, updated_at, next_attempt_at, payload.
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

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.config import NotifierConfig
from cloud.notifiers import DeliveryError, WebhookNotifier, encode_alert
from cloud.rules.notify import Decision
from cloud.store.locks import write_lock
from cloud.store.schema import ensure_set
from shared import topics

logger = logging.getLogger(__name__)
migrations = Migrations("edgeloop.cloud.deliveries")
OPEN_STATES = ("pending", "retrying")
# an attempt's claim: several aggregators share the deliveries table, and the one that queued a
# delivery (or claimed a due retry) owns it this long; past it, a process that died mid-attempt is
# assumed gone and any aggregator retries (longer than a queue of slow webhook attempts)
CLAIM_S = 300.0


@migrations()
def m001_deliveries(db: Database) -> None:
    db.table("deliveries").create(
        {"id": int, "alert_id": str, "individual_id": str, "channel": str, "kind": str, "state": str,
         "attempts": int, "last_error": str, "created_at": float, "updated_at": float,
         "next_attempt_at": float, "payload": str}, pk="id")
    db.table("deliveries").create_index(["state", "next_attempt_at"])
    db.table("deliveries").create_index(["alert_id"])


class DeliveryLog:
    """The ``deliveries`` table (its own migration set; SQL stays here)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        ensure_set(db, migrations)  # two aggregators opening one store at once queue

    def add(self, alert_id: str, individual_id: str, channel: str, kind: str, payload: str, now: float) -> int:
        """A new delivery, claimed by the caller (it is due to others only once the claim expires)."""
        with self.db.atomic():
            cur = self.db.execute(
                "INSERT INTO deliveries (alert_id, individual_id, channel, kind, state, attempts, last_error, "
                "created_at, updated_at, next_attempt_at, payload) VALUES (?, ?, ?, ?, 'pending', 0, '', ?, ?, ?, ?)",
                [alert_id, individual_id, channel, kind, now, now, now + CLAIM_S, payload])
        return int(cur.lastrowid or 0)

    def claim(self, row_id: int, now: float) -> bool:
        """Take a due delivery for one attempt: True for exactly one of the aggregators sharing
        the store (its ``next_attempt_at`` moves ``CLAIM_S`` ahead, so the others skip it)."""
        with self.db.atomic():
            cur = self.db.execute("UPDATE deliveries SET next_attempt_at = ?, updated_at = ? WHERE id = ? "
                                  "AND state IN ('pending', 'retrying') AND next_attempt_at <= ?",
                                  [now + CLAIM_S, now, row_id, now])
        return cur.rowcount == 1

    def outcome(self, row_id: int, state: str, attempts: int, error: str, next_at: float, now: float) -> None:
        with self.db.atomic():
            self.db.execute("UPDATE deliveries SET state = ?, attempts = ?, last_error = ?, updated_at = ?, "
                            "next_attempt_at = ? WHERE id = ?", [state, attempts, error[:500], now, next_at, row_id])

    def due(self, now: float, exclude: set[int]) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, alert_id, individual_id, channel, kind, attempts, payload FROM deliveries "
            "WHERE state IN ('pending', 'retrying') AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 100",
            [now]).fetchall()
        cols = ("id", "alert_id", "individual_id", "channel", "kind", "attempts", "payload")
        return [dict(zip(cols, r, strict=True)) for r in rows if r[0] not in exclude]

    def recent(self, limit: int = 100, alert_id: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE alert_id = ?", [alert_id]) if alert_id else ("", [])
        cur = self.db.execute(f"SELECT id, alert_id, individual_id, channel, kind, state, attempts, last_error, "
                              f"created_at, updated_at, next_attempt_at FROM deliveries {where} "
                              f"ORDER BY id DESC LIMIT ?", [*args, limit])
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def counts(self) -> dict[tuple[str, str], int]:
        """(channel, state) -> rows."""
        return {(c, s): n for c, s, n in self.db.execute(
            "SELECT channel, state, COUNT(*) FROM deliveries GROUP BY channel, state").fetchall()}


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

    def __init__(self, db: Database, channels: Sequence[Channel], clock: Callable[[], float] = time.time) -> None:
        self.log = DeliveryLog(db)
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
            with write_lock(self.log.db):
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


def build_deliveries(db: Database, configs: Sequence[NotifierConfig],
                     publish: Callable[[str, bytes], Any] | None) -> Deliveries:
    return Deliveries(db, [channel_from_config(c, publish) for c in configs])
