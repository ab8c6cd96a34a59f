"""Cloud configuration (TOML: top-level keys plus ``[mqtt]``)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field

from shared.config import doc
from shared.mqtt import MqttConfig


@dataclass(frozen=True)
class CloudConfig:
    instance: str = field(default="", metadata=doc(
        "this aggregator's name; its MQTT client id is edgeloop-<instance> with a persistent session. "
        "Empty: cloud-<host>-<pid>, unique per process, with a session that ends at disconnect (start "
        "as many as you like: they share the work through the shared subscription)"))
    db: str = field(default="edgeloop-cloud.db", metadata=doc("SQLite file of the cloud store"))
    rules: str = field(default="", metadata=doc("notification rules TOML; empty = built-in defaults"))
    shared_subscription: bool = field(default=True, metadata=doc("use $share/ so N aggregators split the load"))
    signing_key: str = field(default="", metadata=doc("PEM file of the cloud's ed25519 private key (commands, releases)"))
    stats_every: float = field(default=60.0, metadata=doc("seconds between cloud.stats log lines (0: never)"))
    mqtt: MqttConfig = field(default_factory=lambda: MqttConfig(username=""), metadata=doc("broker connection"))

    def validate(self) -> None:
        if self.instance and not re.fullmatch(r"[A-Za-z0-9_.-]{1,48}", self.instance):
            raise ValueError(f"instance: {self.instance!r} must be 1-48 characters from A-Z a-z 0-9 _ . -")

    @property
    def client_id(self) -> str:
        """``edgeloop-<instance>``; without an instance, unique to this process."""
        return f"edgeloop-{self.instance or auto_instance()}"


def auto_instance() -> str:
    """``cloud-<host>-<pid>``: two processes on one or many machines never share it."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:24] or "host"
    return f"cloud-{host}-{os.getpid()}"
