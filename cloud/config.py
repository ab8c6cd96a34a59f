"""Cloud configuration (TOML: top-level keys plus ``[mqtt]``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import doc
from shared.mqtt import MqttConfig


@dataclass(frozen=True)
class CloudConfig:
    instance: str = field(default="cloud-1", metadata=doc("this aggregator's id (MQTT client id suffix)"))
    db: str = field(default="edgeloop-cloud.db", metadata=doc("SQLite file of the cloud store"))
    rules: str = field(default="", metadata=doc("notification rules TOML; empty = built-in defaults"))
    shared_subscription: bool = field(default=True, metadata=doc("use $share/ so N aggregators split the load"))
    signing_key: str = field(default="", metadata=doc("PEM file of the cloud's ed25519 private key (commands, releases)"))
    mqtt: MqttConfig = field(default_factory=lambda: MqttConfig(username=""), metadata=doc("broker connection"))
