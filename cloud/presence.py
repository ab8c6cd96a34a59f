"""Aggregator presence: a named instance (a fixed MQTT client id) must run in one process only.

Each named aggregator publishes a retained ``online`` status on ``shared.topics.cloud_status``
with its host, pid and start time (last will: ``offline``; clean exit: ``stopped``). Before it
connects with its own client id it reads that topic (:func:`probe`): a live process holding the
instance makes it refuse to start. While it runs it listens on the same topic: if two processes
raced past the probe, the one that started later yields (:func:`must_yield`), so the broker does
not knock them off each other every second.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as mqtt

from shared import topics
from shared.mqtt import MqttConfig, make_client, paho_keepalive

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Presence:
    instance: str
    state: str  # "online" | "offline" | "stopped"
    host: str
    pid: int
    since: float  # process start (wall clock)
    client_id: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Presence | None:
        try:
            d = json.loads(payload)
            return cls(str(d["instance"]), str(d["state"]), str(d["host"]), int(d["pid"]),
                       float(d["since"]), str(d.get("client_id", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def same_process(self, other: Presence) -> bool:
        return (self.host, self.pid, self.since) == (other.host, other.pid, other.since)

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"pid {self.pid} on {self.host}, started {started}"


def me(instance: str, client_id: str, state: str = "online", since: float | None = None) -> Presence:
    return Presence(instance, state, socket.gethostname(), os.getpid(),
                    time.time() if since is None else since, client_id)


def holder_alive(seen: Presence | None, mine: Presence) -> bool:
    """Does ``seen`` name another live process? A retained ``online`` of a process on this host
    that no longer exists (killed before its will was sent) does not count."""
    if seen is None or seen.state != "online" or seen.same_process(mine):
        return False
    if seen.host == mine.host:
        try:
            os.kill(seen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def must_yield(seen: Presence | None, mine: Presence) -> bool:
    """While running: yield to another live holder that started before us (ties: lower pid)."""
    if not holder_alive(seen, mine):
        return False
    assert seen is not None
    return (seen.since, seen.pid) < (mine.since, mine.pid)


def probe(cfg: MqttConfig, instance: str, timeout: float = 1.5) -> Presence | None:
    """Read the instance's retained presence with a throw-away client id (None: none, or the
    broker could not be reached in time: the running service then decides)."""
    got: list[Presence | None] = []
    done = threading.Event()
    client = make_client(cfg, f"edgeloop-probe-{os.getpid()}-{int(time.time() * 1000) % 10**6}",
                         persistent=False)

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any = None) -> None:
        if rc.is_failure:
            done.set()
            return
        c.subscribe(topics.cloud_status(instance), 1)

    def on_subscribe(c: mqtt.Client, u: Any, mid: Any, rcs: Any, p: Any = None) -> None:
        threading.Timer(0.3, done.set).start()  # a retained message comes right after the SUBACK

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(Presence.decode(msg.payload))
        done.set()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(cfg.host, cfg.port, paho_keepalive(cfg))
    except OSError as exc:
        logger.info("cloud.presence_probe_failed", extra={"instance": instance, "reason": str(exc)})
        return None
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None
