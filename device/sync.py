"""MQTT uplink for the agent: QoS 1, persistent session, retained status with a last will.

paho's network thread only puts what happened into a queue; the agent's main thread drains it
(``poll``) and does all SQLite work, so the outbox is touched by one thread only. What is in flight,
and what PUBACKs and acks mean for the outbox, is the syncer's business (device/syncer.py).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt

from shared import schemas, topics
from shared.mqtt import (
    UNREACHABLE_HINT,
    MqttConfig,
    connect_async,
    connect_fail_level,
    make_client,
    rearm_backoff,
)
from shared.records import Record
from shared.schemas import DeviceState

logger = logging.getLogger(__name__)
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with our id


SyncEventKind = Literal["connected", "disconnected", "puback", "message"]


@dataclass(frozen=True)
class SyncEvent:
    """What paho's network thread reports to the agent's thread."""

    kind: SyncEventKind
    mid: int = 0
    topic: str = ""
    payload: bytes = b""
    ok: bool = True
    detail: str = ""


class Uplink:
    """Owns the paho client of one device."""

    def __init__(self, cfg: MqttConfig, device_id: str, max_inflight: int = 8, incarnation: str = "") -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.incarnation = incarnation  # the outbox's: sent with every batch
        self.events: queue.Queue[SyncEvent] = queue.Queue()
        self.connected = False
        self.max_inflight = max_inflight
        self.connects = 0
        self.sessions = 0  # successful connects seen by the network thread
        self.failed_attempts = 0  # TCP/TLS attempts that failed since the last connect
        self._stopping = False
        self._session_up = False  # paho thread: a CONNACK came since the last disconnect
        self.client = make_client(cfg, device_id)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.will_set(topics.status(device_id), self._status("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _status(self, state: DeviceState) -> bytes:
        return schemas.encode(schemas.Status(self.device_id, state, time.time(), self.incarnation))

    # paho thread -------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            # the broker answered and said no (bad credentials, not authorised, server busy)
            logger.warning("sync.connect_refused", extra={"device_id": self.device_id, "broker": self.cfg.url,
                                                          "reason": str(rc)})
            self.events.put(SyncEvent("disconnected", detail=f"refused: {rc}"))
            return
        client.subscribe([(topics.ack(self.device_id), 1), (topics.commands(self.device_id), 1)])
        client.publish(topics.status(self.device_id), self._status("online"), qos=1, retain=True)
        session = bool(getattr(flags, "session_present", False))
        logger.info("sync.connected", extra={"device_id": self.device_id, "broker": self.cfg.url,
                                             "session_present": session, "reconnect": self.sessions > 0,
                                             "failed_attempts": self.failed_attempts})
        self.sessions += 1
        self.failed_attempts = 0
        self._session_up = True
        self.events.put(SyncEvent("connected", detail=str(session)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the exception is the reason
        exc = sys.exc_info()[1]
        self.failed_attempts += 1
        logger.log(connect_fail_level(self.failed_attempts), "sync.connect_failed", extra={
            "device_id": self.device_id, "broker": self.cfg.url,
            "reason": f"{type(exc).__name__}: {exc}" if exc else "unknown", "attempt": self.failed_attempts,
            "hint": UNREACHABLE_HINT})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        rearm_backoff(client, self.cfg)
        reason = str(rc)
        if getattr(rc, "value", None) == SESSION_TAKEN_OVER:
            logger.warning("sync.session_taken_over", extra={
                "device_id": self.device_id, "broker": self.cfg.url, "reason": reason,
                "hint": "another process connected with this device id: run one agent per device_id"})
        elif not self._stopping and not self._session_up:  # no CONNACK since the last try: it failed
            self.failed_attempts += 1
            logger.log(connect_fail_level(self.failed_attempts), "sync.connect_failed", extra={
                "device_id": self.device_id, "broker": self.cfg.url, "reason": reason,
                "attempt": self.failed_attempts, "hint": UNREACHABLE_HINT})
        elif not self._stopping:
            logger.info("sync.disconnected", extra={"device_id": self.device_id, "broker": self.cfg.url,
                                                    "reason": reason})
        self._session_up = False
        self.events.put(SyncEvent("disconnected", detail=reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any = None) -> None:
        self.events.put(SyncEvent("puback", mid=mid, ok=not rc.is_failure, detail=str(rc)))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.events.put(SyncEvent("message", topic=msg.topic, payload=bytes(msg.payload)))

    # agent thread ------------------------------------------------------------------------------
    def start(self) -> None:
        connect_async(self.client, self.cfg)
        self.client.loop_start()

    def poll(self) -> list[SyncEvent]:
        """Drain what the network thread reported, updating the connection state."""
        out: list[SyncEvent] = []
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return out
            if ev.kind == "connected":
                self.connected = True
                self.connects += 1
            elif ev.kind == "disconnected":
                self.connected = False
            out.append(ev)

    def send(self, records: list[Record]) -> int | None:
        """Publish records as one batch (QoS 1). Returns the mid, or None if not sent."""
        info = self.client.publish(topics.uplink(self.device_id),
                                   uplink_payload(self.device_id, records, self.incarnation), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        return info.mid

    def stop(self, timeout: float = 5.0) -> None:
        """Publish a clean 'stopped' status, then disconnect."""
        self._stopping = True
        if not self.connected:
            # out of reach: nothing to say, and paho's thread may be asleep between attempts for up
            # to a second; disconnect() ends its loop at the next wake, no need to wait for it
            self.client.disconnect()
            return
        info = self.client.publish(topics.status(self.device_id), self._status("stopped"), qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()


def uplink_payload(device_id: str, records: list[Record], incarnation: str) -> bytes:
    """The uplink message carrying ``records`` (one batch; what :meth:`Uplink.send` publishes)."""
    return schemas.encode(schemas.UplinkBatch(device_id, tuple(records), incarnation))
