"""paho-mqtt 2.x client construction shared by device and cloud (one place for URL, TLS, v5/v3)."""

from __future__ import annotations

import logging
import math
import os
import random
import ssl
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.config import ConfigError, doc


@dataclass(frozen=True)
class MqttConfig:
    """Broker connection settings (the password comes from $EDGELOOP_MQTT_PASSWORD)."""

    url: str = field(default="mqtt://127.0.0.1:1883", metadata=doc("broker URL: mqtt://host:port or mqtts://host:port"))
    protocol: Literal["5", "3.1.1"] = field(default="5", metadata=doc("MQTT protocol version"))
    keepalive: int = field(default=30, metadata=doc("keepalive seconds; a dead link is noticed within 1.5x"))
    username: str = field(default="", metadata=doc("broker username (per-device credentials)"))
    tls_ca: str = field(default="", metadata=doc("CA certificate file for TLS"))
    tls_cert: str = field(default="", metadata=doc("client certificate file for TLS"))
    tls_key: str = field(default="", metadata=doc("client key file for TLS"))
    session_expiry: int = field(default=7 * 86400, metadata=doc("persistent session lifetime (s, MQTT 5)"))
    reconnect_min: float = field(default=1.0, metadata=doc("first reconnect delay (s), x uniform(0.5, 1.5) jitter"))
    reconnect_max: float = field(default=30.0, metadata=doc("longest reconnect delay (s)"))

    def validate(self) -> None:
        u = urlparse(self.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"mqtt -> url: {self.url!r} must look like mqtt://host:port")
        if not 5 <= self.keepalive <= 3600:
            raise ValueError(f"mqtt -> keepalive: {self.keepalive} must be 5..3600 s")

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        u = urlparse(self.url)
        return u.port or (8883 if u.scheme == "mqtts" else 1883)


def make_client(cfg: MqttConfig, client_id: str, persistent: bool = True) -> mqtt.Client:
    """A paho client configured for a persistent session (clean start off); ``persistent=False``
    for a client id that dies with its process (the session ends at disconnect)."""
    v5 = cfg.protocol == "5"
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent,
    )
    if cfg.username:
        client.username_pw_set(cfg.username, os.environ.get("EDGELOOP_MQTT_PASSWORD"))
    if cfg.tls_ca or cfg.url.startswith("mqtts://"):
        try:
            client.tls_set(ca_certs=cfg.tls_ca or None, certfile=cfg.tls_cert or None,
                           keyfile=cfg.tls_key or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt -> tls: cannot load certificates: {exc}") from None
    rearm_backoff(client, cfg)
    return client


def rearm_backoff(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Exponential reconnect backoff with jitter: paho doubles the delay from ``min_delay`` on each
    failed attempt; a fresh random ``min_delay`` after every disconnect keeps a fleet that lost the
    same broker from reconnecting in the same instant."""
    client.reconnect_delay_set(min_delay=cfg.reconnect_min * random.uniform(0.5, 1.5),  # type: ignore[arg-type]
                               max_delay=int(cfg.reconnect_max))


UNREACHABLE_HINT = ("retrying with backoff; check the broker URL (--broker or mqtt.url), that the broker runs "
                    "and that this host can reach it")


def connect_fail_level(attempt: int) -> int:
    """Log level of the ``attempt``-th failed connect in a row: WARNING for the first and at 10,
    100, ... (an unreachable broker shows at the default level without a line per retry), INFO else."""
    return logging.WARNING if attempt >= 1 and math.log10(attempt).is_integer() else logging.INFO


def paho_keepalive(cfg: MqttConfig) -> int:
    """paho pings after one keepalive of silence and gives up after another, so a dead link is
    noticed after ~2x what it is given: give it 0.75x the configured value to notice within 1.5x."""
    return max(1, int(cfg.keepalive * 0.75))


def connect_async(client: mqtt.Client, cfg: MqttConfig, persistent: bool = True) -> None:
    """Start connecting in the background with a persistent session (or, ``persistent=False``,
    a fresh one that the broker drops at disconnect)."""
    keepalive = paho_keepalive(cfg)
    if cfg.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho's class is untyped
        props.SessionExpiryInterval = cfg.session_expiry if persistent else 0
        client.connect_async(cfg.host, cfg.port, keepalive, clean_start=not persistent, properties=props)
    else:
        client.connect_async(cfg.host, cfg.port, keepalive)
