"""A bare MQTT device for cloud tests: publishes batches on its own uplink topic and collects the
cloud's acks with the time each arrived."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from shared import schemas, topics


class AckDevice:
    def __init__(self, url: str, device_id: str, incarnation: str) -> None:
        self.device_id = device_id
        self.incarnation = incarnation
        self.acks: list[tuple[float, schemas.Ack]] = []  # (time.monotonic() it came, ack)
        self.got = threading.Condition()
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{device_id}")
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.subscribe(topics.ack(device_id), qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        ack = schemas.decode(msg.payload)
        with self.got:
            self.acks.append((time.monotonic(), ack))  # type: ignore[arg-type]
            self.got.notify_all()

    def publish(self, *recs: schemas.Record, timeout: float = 10.0) -> tuple[float, schemas.Ack] | None:
        """Publish one batch of ``recs``; (seconds until the next ack, that ack), None when none came."""
        n = len(self.acks)
        t = time.monotonic()
        self.client.publish(topics.uplink(self.device_id),
                            schemas.encode(schemas.UplinkBatch(self.device_id, recs, self.incarnation)), qos=1)
        with self.got:
            if not self.got.wait_for(lambda: len(self.acks) > n, timeout):
                return None
            at, ack = self.acks[n]
        return at - t, ack

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
