"""Cloud configuration (TOML: top-level keys plus ``[mqtt]``)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from shared.config import doc
from shared.mqtt import MqttConfig
from shared.topics import check_id


@dataclass(frozen=True)
class NotifierConfig:
    """One way to tell owners (a ``[[notifiers]]`` table); every alert goes to every notifier."""

    kind: Literal["log", "webhook", "mqtt"] = field(default="log", metadata=doc(
        "log: a notify.sent log line; webhook: POST the alert JSON to url; mqtt: publish it on "
        "edgeloop/v1/owner/<individual>/alerts (QoS 1)"))
    name: str = field(default="", metadata=doc("name in logs, metrics and the dashboard; empty = kind"))
    url: str = field(default="", metadata=doc("webhook: http(s)://host[:port]/path"))
    timeout: float = field(default=5.0, metadata=doc("webhook: seconds to wait for an answer per attempt"))
    retries: int = field(default=5, metadata=doc("attempts after the first before the delivery is given up"))
    backoff: float = field(default=30.0, metadata=doc("seconds before the first retry; doubles per retry"))
    backoff_max: float = field(default=3600.0, metadata=doc("longest wait between two retries (s)"))
    token_env: str = field(default="", metadata=doc(
        "webhook: environment variable holding a token sent as 'Authorization: Bearer <token>'"))
    hmac_secret_env: str = field(default="", metadata=doc(
        "webhook: environment variable holding a secret; each POST carries X-Edgeloop-Signature: "
        "sha256=<HMAC-SHA256 of the body>"))
    headers: dict[str, str] = field(default_factory=dict, metadata=doc("webhook: extra HTTP headers (a TOML table)"))

    def validate(self) -> None:
        if self.kind == "webhook":
            u = urlsplit(self.url)
            if u.scheme not in ("http", "https") or not u.netloc:
                raise ValueError(f"url: {self.url!r} must be http(s)://host[:port]/path for a webhook")
        elif self.url:
            raise ValueError(f"url: only a webhook takes a url (kind is {self.kind!r})")
        if not 0.1 <= self.timeout <= 120:
            raise ValueError(f"timeout: {self.timeout} must be 0.1..120 s")
        if not 0 <= self.retries <= 50:
            raise ValueError(f"retries: {self.retries} must be 0..50")
        if not 0 < self.backoff <= self.backoff_max:
            raise ValueError(f"backoff: {self.backoff} must be > 0 and <= backoff_max ({self.backoff_max})")
        for k, v in self.headers.items():
            if not isinstance(v, str):
                raise ValueError(f"headers -> {k}: expected a string, found {v!r:.40}")

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class HomeAssistantConfig:
    """Publish each individual to Home Assistant through its MQTT discovery convention."""

    enabled: bool = field(default=False, metadata=doc(
        "publish discovery configs and states (status, last alert, battery) for Home Assistant"))
    prefix: str = field(default="homeassistant", metadata=doc("Home Assistant's discovery_prefix"))
    every: float = field(default=30.0, metadata=doc("seconds between state refreshes (alerts refresh at once)"))

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", self.prefix):
            raise ValueError(f"prefix: {self.prefix!r} must be a topic path without wildcards")
        if self.every < 1:
            raise ValueError(f"every: {self.every} must be >= 1 s")


@dataclass(frozen=True)
class DeviceBinding:
    """A provisioned device and the individual(s) it speaks for (a ``[[devices]]`` table)."""

    device_id: str = field(default="", metadata=doc("the device's id (its MQTT topic's)"))
    individuals: tuple[str, ...] = field(default=(), metadata=doc(
        "the individual id(s) this device may send records for; records for any other are refused"))

    def validate(self) -> None:
        check_id(self.device_id, "device_id")
        for ind in self.individuals:
            check_id(ind, "individual id")
        if not self.individuals:
            raise ValueError(f"individuals: device {self.device_id!r} needs at least one individual")


@dataclass(frozen=True)
class CloudConfig:
    instance: str = field(default="", metadata=doc(
        "this aggregator's name; its MQTT client id is edgeloop-<instance> with a persistent session. "
        "Empty: cloud-<host>-<pid>, unique per process, with a session that ends at disconnect (start "
        "as many as you like: they share the work through the shared subscription)"))
    db: str = field(default="edgeloop-cloud.db", metadata=doc("the cloud store: a SQLite file (or sqlite:///path) or postgresql://user@host:port/dbname"))
    rules: str = field(default="", metadata=doc("notification rules TOML; empty = built-in defaults"))
    shared_subscription: bool = field(default=True, metadata=doc("use $share/ so N aggregators split the load"))
    signing_key: str = field(default="", metadata=doc("PEM file of the cloud's ed25519 private key (commands, releases)"))
    notifiers: tuple[NotifierConfig, ...] = field(default=(NotifierConfig(),), metadata=doc(
        "how owners are told: [[notifiers]] tables (kind = log | webhook | mqtt); default: the log only"))
    home_assistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig, metadata=doc(
        "Home Assistant MQTT discovery"))
    http: str = field(default="", metadata=doc(
        "HOST:PORT of the operators' web server (dashboard, /metrics, /healthz); empty = none"))
    operator_token_env: str = field(default="EDGELOOP_OPERATOR_TOKEN", metadata=doc(
        "environment variable holding the operator token that state-changing dashboard actions "
        "(feedback, halt, promote, rollback) require; unset = those actions are refused"))
    binding: Literal["first_seen", "provisioned"] = field(default="first_seen", metadata=doc(
        "which individuals a device may speak for: first_seen binds a device to the first individual it "
        "reports that no other device holds (a different one later is refused until an operator runs "
        "edgeloop bind); provisioned accepts only the [[devices]] tables and edgeloop bind"))
    devices: tuple[DeviceBinding, ...] = field(default=(), metadata=doc(
        "provisioned devices: [[devices]] tables with device_id and individuals, bound at start"))
    inbox_max: int = field(default=10_000, metadata=doc(
        "messages waiting to be handled, at most; beyond it the busiest device's newest are dropped "
        "(counted; its unacked records come again from the device)"))
    inbox_per_device: int = field(default=1_000, metadata=doc(
        "messages one device (or other sender) may have waiting; a device over it has its new "
        "messages dropped and counted, so it cannot starve the others"))
    inbox_max_mb: float = field(default=64.0, metadata=doc(
        "payload megabytes waiting to be handled, at most (one device: a quarter of it)"))
    stats_every: float = field(default=60.0, metadata=doc("seconds between cloud.stats log lines (0: never)"))
    mqtt: MqttConfig = field(default_factory=lambda: MqttConfig(username=""), metadata=doc("broker connection"))

    def validate(self) -> None:
        names = [n.label for n in self.notifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"notifiers: names {names} repeat: give each a distinct name")
        if not 0.01 <= self.inbox_max_mb <= 65536:
            raise ValueError(f"inbox_max_mb: {self.inbox_max_mb} must be 0.01 .. 65536")
        if not 1 <= self.inbox_per_device <= self.inbox_max:
            raise ValueError(f"inbox_per_device: {self.inbox_per_device} must be 1 .. inbox_max ({self.inbox_max})")
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
