"""The aggregator as an MQTT service: paho's thread queues messages, one thread handles them."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from cloud.aggregator.handler import Aggregator
from shared import topics
from shared.mqtt import MqttConfig, connect_async, make_client, rearm_backoff

logger = logging.getLogger(__name__)


class AggregatorService:
    """Subscribes to device uplinks (shared subscription), status and owner feedback."""

    def __init__(self, aggregator: Aggregator, mqtt_cfg: MqttConfig, client_id: str,
                 shared_subscription: bool = True) -> None:
        self.agg = aggregator
        self.shared = shared_subscription
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected = threading.Event()
        self.client = make_client(mqtt_cfg, client_id)
        self.client.max_inflight_messages_set(64)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.client.on_disconnect = self._on_disconnect
        self.cfg = mqtt_cfg
        aggregator.publish = self.publish

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            logger.error("cloud.connect_refused", extra={"reason": str(rc)})
            return
        client.subscribe([(topics.cloud_uplink_filter(self.shared), 1), (topics.STATUS_FILTER, 1),
                          (topics.FEEDBACK_FILTER, 1)])
        self.connected.set()
        logger.info("cloud.connected", extra={"shared": self.shared})

    def _on_disconnect(self, client: mqtt.Client, *args: Any) -> None:
        self.connected.clear()
        rearm_backoff(client, self.cfg)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def start(self) -> None:
        connect_async(self.client, self.cfg)
        self.client.loop_start()

    def serve(self, stop: threading.Event, idle: float = 0.05, tick_every: float = 1.0) -> None:
        """Handle messages until ``stop`` is set (all SQLite work happens on this thread);
        run the aggregator's timed work every ``tick_every`` seconds."""
        last_tick = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - last_tick >= tick_every:
                self.agg.tick()
                last_tick = time.monotonic()
            try:
                topic, payload = self.inbox.get(timeout=idle)
            except queue.Empty:
                continue
            self.agg.handle_message(topic, payload)

    def drain(self) -> int:
        """Handle whatever is queued now; returns how many messages."""
        n = 0
        while True:
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                return n
            self.agg.handle_message(topic, payload)
            n += 1

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
