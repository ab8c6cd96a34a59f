"""``edgeloop agent --source mqtt://host:port/frigate/events``: a household's Frigate NVR as a
perception source, each camera with its own baselines, into edgeloop's outbox and uplink.

The agent subscribes to Frigate's event topic on Frigate's broker, reads each message
(device/frigate.py), and files what a camera's class rates find as events of kind ``novel``
under the camera's name (the camera is the "individual"), through the same SQLite outbox and
uplink (QoS 1, acks) as any device. A message that is not a Frigate event is counted and
logged in one line, never raised. The cameras' learnt rates are saved in the outbox's state.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt

from device.config import AgentConfig
from device.detect.class_rates import Finding
from device.frigate import FrigateCameras, FrigateError, parse_event
from device.outbox import BufferFullError, Outbox
from device.syncer import Syncer
from shared.codec import to_json
from shared.mqtt import MqttConfig, make_client
from shared.topics import TopicError, check_id

logger = logging.getLogger(__name__)
DEFAULT_DEVICE_ID = "frigate-000"
SAVE_EVERY_S = 60.0


class SourceUrlError(ValueError):
    """A Frigate source URL that cannot be used."""


def is_frigate_source(source: str) -> bool:
    return source.startswith(("mqtt://", "mqtts://"))


def parse_source(source: str) -> tuple[str, str, str, str]:
    """``mqtt://[user[:password]@]host[:port]/frigate/events`` -> (broker URL, topic, user, password)."""
    u = urlparse(source)
    topic = u.path.lstrip("/")
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise SourceUrlError(f"source {source!r}: expected mqtt://host:port/frigate/events")
    if not topic or u.query or "#" in source or "+" in topic:
        raise SourceUrlError(f"source {source!r}: name Frigate's event topic after the port, e.g. "
                             "mqtt://host:1883/frigate/events (no wildcards)")
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.hostname}{port}", topic, unquote(u.username or ""), unquote(u.password or "")


class FrigateAgent:
    """One agent for all of a Frigate's cameras (see the module doc)."""

    def __init__(self, cfg: AgentConfig, *, connect: bool = True) -> None:
        self.cfg = cfg = replace(cfg, kind="perception", device_id=cfg.device_id or DEFAULT_DEVICE_ID)
        self.broker, self.topic, user, password = parse_source(cfg.source)
        state_dir = Path(cfg.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        ob = cfg.outbox
        self.outbox = Outbox(ob.path or state_dir / "outbox.db", ob.max_bytes, ob.resend_after, ob.raw_ttl)
        self.counts: Counter[str] = Counter()
        self.cameras = FrigateCameras(learn_days=cfg.learn_days, tz_offset_h=cfg.tz_offset_h)
        self._restore()
        self.syncer = Syncer(cfg.device_id, self.outbox, cfg.mqtt if connect else None, ob.batch_size, self.counts,
                             on_command=self._on_command)
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.subscribed = threading.Event()  # Frigate's topic is subscribed (tests wait for it)
        self.client = make_client(MqttConfig(url=self.broker, protocol=cfg.mqtt.protocol),
                                  f"{cfg.device_id}-frigate-in", persistent=False)
        if user:
            self.client.username_pw_set(user, password or None)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # ---- paho's thread -------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            logger.warning("frigate.connect_refused", extra={"broker": self.broker, "reason": str(rc)})
            return
        client.subscribe(self.topic, qos=1)
        logger.info("frigate.connected", extra={"broker": self.broker, "topic": self.topic})

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        logger.info("frigate.subscribed", extra={"broker": self.broker, "topic": self.topic})
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(bytes(msg.payload))

    # ---- the agent's thread --------------------------------------------------------------------
    def handle(self, payload: bytes) -> None:
        """One Frigate message: read, advance its camera's minutes, file what they find."""
        try:
            obj = parse_event(payload)
        except FrigateError as exc:
            self.counts["frigate_rejected"] += 1
            logger.warning("frigate.message_rejected", extra={"reason": f"{exc}: is the topic Frigate's events?"})
            return
        try:
            check_id(obj.camera, "camera name")
        except TopicError as exc:
            self.counts["camera_name_rejected"] += 1
            logger.error("frigate.camera_rejected", extra={"reason": f"{exc}: rename the camera in Frigate's config"})
            return
        self.counts["frigate_messages"] += 1
        if obj.false_positive:
            self.counts["frigate_false_positive"] += 1
        for camera, f in self.cameras.add(obj):
            self._file(camera, f)

    def _file(self, camera: str, f: Finding) -> None:
        event = f.event(detector_version="frigate-class-rates")
        try:
            self.outbox.append("event", camera, f.ts, to_json(event))
        except BufferFullError as exc:
            self.counts["outbox_refused"] += 1
            logger.error("outbox.refused", extra={"reason": str(exc), "kind": "event"})
            return
        self.counts["events"] += 1
        logger.info("agent.event", extra={"device_id": self.cfg.device_id, "camera": camera, "metrics": [f.what]})

    def _on_command(self, payload: bytes) -> None:
        self.counts["commands_ignored"] += 1  # a Frigate source takes no models or detector configs

    def save_state(self) -> None:
        self.outbox.put("frigate_state", json.dumps(self.cameras.state()).encode())

    def _restore(self) -> None:
        blob = self.outbox.get("frigate_state")
        if not blob:
            return
        try:
            self.cameras.restore(json.loads(blob))
        except (ValueError, TypeError, AttributeError) as exc:
            self.counts["frigate_state_unreadable"] += 1
            logger.warning("agent.state_unreadable", extra={"reason": f"frigate state: {exc}"})

    def step(self, timeout: float = 0.1) -> int:
        """Handle what has arrived (waiting up to ``timeout`` for the first), pump the uplink."""
        n = 0
        try:
            payload = self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
            while True:
                self.handle(payload)
                n += 1
                payload = self.inbox.get_nowait()
        except queue.Empty:
            pass
        self.syncer.pump()
        return n

    def run(self, stop: threading.Event) -> dict[str, Any]:
        """Serve until ``stop`` is set; then save and drain the uplink."""
        self.client.connect_async(urlparse(self.broker).hostname or "127.0.0.1", urlparse(self.broker).port or 1883)
        self.client.loop_start()
        self.syncer.start()
        last_save = time.monotonic()
        try:
            while not stop.is_set():
                self.step()
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    self.save_state()
                    last_save = time.monotonic()
            self.client.disconnect()
            self.client.loop_stop()
            while self.step(timeout=0.0):  # what arrived before the stop is read, not dropped
                pass
            self.syncer.drain(self.cfg.drain_timeout, patient=False)
        finally:
            self.save_state()
            self.client.loop_stop()
            self.syncer.stop()
        return self.report()

    def report(self) -> dict[str, Any]:
        return {"device_id": self.cfg.device_id, "source": f"{self.broker}/{self.topic}",
                "cameras": sorted(self.cameras.cameras), "pending": self.outbox.pending_count(),
                "outbox": self.outbox.counters(),
                "ingest": {**self.counts, "camera_timeline_restarts": self.cameras.restarts}}
