"""The aggregator as an MQTT service: paho's thread queues messages, one thread handles them.

The queue between them is a bounded, fair inbox (cloud/aggregator/inbox.py): one FIFO per device
served round-robin, so a device flooding its own topic delays itself, not the others; what does
not fit is dropped, counted and logged once a second (``cloud.inbox_dropped``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud import presence
from cloud.aggregator.handler import Aggregator
from cloud.aggregator.inbox import FairInbox
from cloud.ops.broker_sys import SYS_FILTER, BrokerSys
from shared import topics
from shared.mqtt import (
    UNREACHABLE_HINT,
    MqttConfig,
    connect_async,
    connect_fail_level,
    make_client,
    rearm_backoff,
)

logger = logging.getLogger(__name__)
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with our id


def sender_of(topic: str) -> str:
    """Whose share of the inbox a message takes: the device id of a per-device topic, the
    individual of an owner's topic, else one share for everything else."""
    parts = topic.split("/", 4)
    if len(parts) >= 4 and parts[2] in ("dev", "owner") and f"{parts[0]}/{parts[1]}" == topics.ROOT:
        return f"{parts[2]}:{parts[3][:64]}"
    return "other"


class ClientIdTaken(RuntimeError):
    """Another live process holds this aggregator's (named) instance and so its client id."""


class AggregatorService:
    """Subscribes to device uplinks (shared subscription), status and owner feedback."""

    def __init__(self, aggregator: Aggregator, mqtt_cfg: MqttConfig, client_id: str,
                 shared_subscription: bool = True, persistent: bool = True,
                 instance: str | None = None, inbox_max: int = 10_000, inbox_per_device: int = 1_000,
                 inbox_max_bytes: int = 64 * 2**20, client: mqtt.Client | None = None) -> None:
        """``instance``: a named aggregator publishes its presence and refuses to share its
        client id with another live process (see cloud.presence). ``inbox_*``: the inbox's bounds
        (cloud.aggregator.inbox). ``client``: the paho client made beforehand (``make_client``),
        when the aggregator's collaborators publish through it; otherwise one is made here and
        an aggregator built without ``publish`` acks through it."""
        self.agg = aggregator
        self.shared = shared_subscription
        self.persistent = persistent
        self.instance = instance
        self.me = presence.me(instance, client_id) if instance else None
        self.client_id = client_id
        self.inbox: FairInbox[tuple[str, bytes]] = FairInbox(inbox_max, inbox_per_device, inbox_max_bytes)
        self._dropped_logged = 0
        self.connected = threading.Event()
        self.taken_over = threading.Event()  # another process connected with our client id
        self.received = 0  # messages taken off the broker (paho thread)
        self.retained_refused = 0  # uplinks with the retain flag, refused (paho thread)
        self._retained_seen: set[str] = set()
        self.broker_sys = BrokerSys()  # the broker's own $SYS figures, for metrics and the dashboard
        # other topics this service listens to, handled on paho's thread: {topic: handler(payload)}
        self.extra_subscriptions: dict[str, Callable[[bytes], None]] = {}
        self.connects = 0
        self.failed_attempts = 0
        self.group_max = 64  # messages handled in one transaction at most (group commit)
        self._stopping = False
        self.client = client if client is not None else make_client(mqtt_cfg, client_id, persistent=persistent)
        self.client.max_inflight_messages_set(64)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.cfg = mqtt_cfg
        if self.me is not None:
            self.client.will_set(topics.cloud_status(self.me.instance),
                                 replace(self.me, state="offline").encode(),
                                 qos=1, retain=True)
        if aggregator.publish is None:
            aggregator.publish = self.publish

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith("$SYS/"):
            self.broker_sys.update(msg.topic, bytes(msg.payload))
            return
        extra = self.extra_subscriptions.get(msg.topic)
        if extra is not None:
            extra(bytes(msg.payload))
            return
        if self.me is not None and msg.topic == topics.cloud_status(self.me.instance):
            self._on_presence(client, presence.Presence.decode(bytes(msg.payload)))
            return
        if msg.retain and msg.topic.startswith(topics.DEVICE_PREFIX) and msg.topic.endswith("/up"):
            self._refuse_retained(msg.topic)
            return
        self.received += 1
        payload = bytes(msg.payload)
        self.inbox.put(sender_of(msg.topic), (msg.topic, payload), len(payload) + len(msg.topic))

    def _refuse_retained(self, topic: str) -> None:
        """An uplink with the retain flag: the broker would replay it to every new subscriber (a
        device's storage of its own choosing at the broker): refused, counted, logged once per topic."""
        self.retained_refused += 1
        if topic not in self._retained_seen:
            self._retained_seen.add(topic)
            logger.warning("cloud.retained_uplink_refused", extra={
                "topic": topic, "hint": "devices never retain uplinks: a device (or its credentials) misbehaves; "
                "clear it with an empty retained publish on that topic from an admin account"})

    def _on_presence(self, client: mqtt.Client, seen: presence.Presence | None) -> None:
        assert self.me is not None
        if presence.must_yield(seen, self.me) and not self.taken_over.is_set():
            # two processes raced past the start-up probe: the later one yields
            self.taken_over.set()
            self._stopping = True
            client.disconnect()
            logger.error("cloud.client_id_taken", extra={
                "client_id": self.client_id, "broker": self.cfg.url, "holder": seen.describe() if seen else "",
                "hint": "another aggregator runs with this instance: give each its own instance, or "
                        "leave instance empty for a unique one"})

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            logger.error("cloud.connect_refused", extra={"client_id": self.client_id, "broker": self.cfg.url,
                                                         "reason": str(rc)})
            return
        # MQTT 5: uplinks keep their retain flag as published, so a retained one is seen (and
        # refused) live too, not only when the broker replays it at subscribe time
        up: Any = (SubscribeOptions(qos=1, retainAsPublished=True) if self.cfg.protocol == "5" else 1)
        subs = [(topics.cloud_uplink_filter(self.shared), up), (topics.STATUS_FILTER, 1),
                (topics.FEEDBACK_FILTER, 1), (SYS_FILTER, 0)]
        subs += [(t, 1) for t in self.extra_subscriptions]
        if self.me is not None:
            subs.append((topics.cloud_status(self.me.instance), 1))
            client.publish(topics.cloud_status(self.me.instance), self.me.encode(), qos=1, retain=True)
        client.subscribe(subs)
        self.connected.set()
        logger.info("cloud.connected", extra={
            "client_id": self.client_id, "broker": self.cfg.url, "shared": self.shared,
            "persistent": self.persistent, "session_present": bool(getattr(flags, "session_present", False)),
            "reconnect": self.connects > 0, "failed_attempts": self.failed_attempts})
        self.connects += 1
        self.failed_attempts = 0

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        exc = sys.exc_info()[1]  # paho calls this inside its ``except OSError``
        self.failed_attempts += 1
        logger.log(connect_fail_level(self.failed_attempts), "cloud.connect_failed", extra={
            "client_id": self.client_id, "broker": self.cfg.url, "attempt": self.failed_attempts,
            "reason": f"{type(exc).__name__}: {exc}" if exc else "unknown", "hint": UNREACHABLE_HINT})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        was_up = self.connected.is_set()
        self.connected.clear()
        rearm_backoff(client, self.cfg)
        if not was_up and not self._stopping and getattr(rc, "value", None) != SESSION_TAKEN_OVER:
            # no CONNACK since the last try: the attempt failed (a broker that never answers)
            self.failed_attempts += 1
            logger.log(connect_fail_level(self.failed_attempts), "cloud.connect_failed", extra={
                "client_id": self.client_id, "broker": self.cfg.url, "attempt": self.failed_attempts,
                "reason": str(rc), "hint": UNREACHABLE_HINT})
        elif getattr(rc, "value", None) == SESSION_TAKEN_OVER:
            # reconnecting would knock the other process off in turn, every second: stop instead
            self.taken_over.set()
            client.disconnect()
            logger.error("cloud.client_id_taken", extra={
                "client_id": self.client_id, "broker": self.cfg.url, "reason": str(rc),
                "hint": "another aggregator connected with this client id: give each its own "
                        "instance, or leave instance empty for a unique one"})
        elif not self._stopping:
            logger.info("cloud.disconnected", extra={"client_id": self.client_id, "broker": self.cfg.url,
                                                     "reason": str(rc)})

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def start(self) -> None:
        """Connect in the background; a named instance first checks that no live process holds it
        (ClientIdTaken)."""
        if self.me is not None:
            seen = presence.probe(self.cfg, self.me.instance)
            if presence.holder_alive(seen, self.me):
                assert seen is not None
                raise ClientIdTaken(
                    f"client id {self.client_id} is in use by another aggregator ({seen.describe()}): "
                    f"give this one its own instance (--config instance = '...'), or leave instance "
                    f"empty for a unique id")
        connect_async(self.client, self.cfg, persistent=self.persistent)
        self.client.loop_start()

    def serve(self, stop: threading.Event, idle: float = 0.05, tick_every: float = 1.0) -> None:
        """Handle messages until ``stop`` is set (all SQLite work happens on this thread);
        run the aggregator's timed work every ``tick_every`` seconds."""
        last_tick = time.monotonic()
        while not stop.is_set() and not self.taken_over.is_set():
            if time.monotonic() - last_tick >= tick_every:
                self.agg.tick()
                self.agg.flush_rejections()
                self.log_dropped()
                last_tick = time.monotonic()
            try:
                first = self.inbox.get(timeout=idle)
            except queue.Empty:
                self.agg.flush_rejections()
                continue
            self._handle([first, *self._queued(self.group_max - 1)])
        self.agg.flush_rejections()

    def _queued(self, limit: int) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        while len(out) < limit:
            try:
                out.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return out

    def _handle(self, msgs: list[tuple[str, bytes]]) -> None:
        """What has queued up is handled together (one transaction for its uplinks: group commit)."""
        if len(msgs) == 1:
            self.agg.handle_message(*msgs[0])
        else:
            self.agg.handle_messages(msgs)

    def drain(self) -> int:
        """Handle whatever is queued now; returns how many messages."""
        n = 0
        while msgs := self._queued(self.group_max):
            self._handle(msgs)
            n += len(msgs)
        self.agg.flush_rejections()
        return n

    def log_dropped(self) -> None:
        """One ``cloud.inbox_dropped`` line when messages were dropped since the last one."""
        total = sum(self.inbox.dropped.values())
        if total == self._dropped_logged:
            return
        top = self.inbox.take_dropped_by()
        logger.warning("cloud.inbox_dropped", extra={
            "dropped": total - self._dropped_logged, "dropped_total": total, "by_reason": dict(self.inbox.dropped),
            "top_senders": ", ".join(f"{c}={n}" for c, n in top), "inbox": self.inbox.qsize(),
            "hint": "a device over its share of the inbox (inbox_per_device): its records come again "
                    "from its outbox; look at the top senders"})
        self._dropped_logged = total

    def stop(self) -> None:
        if self.me is not None and self.connected.is_set() and not self.taken_over.is_set():
            info = self.client.publish(topics.cloud_status(self.me.instance),
                                       replace(self.me, state="stopped").encode(),
                                       qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
