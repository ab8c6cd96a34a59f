"""Agent configuration (TOML ``[agent]`` keys at the top level, ``[mqtt]``, ``[outbox]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared.config import doc
from shared.mqtt import MqttConfig
from shared.topics import TopicError, check_id


@dataclass(frozen=True)
class OutboxConfig:
    path: str = field(default="", metadata=doc("SQLite file; empty = <state_dir>/outbox.db"))
    max_bytes: int = field(default=64 * 1024 * 1024, metadata=doc("disk bound for queued rows"))
    resend_after: float = field(default=30.0, metadata=doc("re-send a published row not acked by the cloud after this many s"))
    raw_ttl: float = field(default=7 * 86400.0, metadata=doc("raw windows older than this are dropped (s)"))
    batch_size: int = field(default=50, metadata=doc("records per MQTT message"))

    def validate(self) -> None:
        if self.max_bytes < 64 * 1024:
            raise ValueError(f"outbox -> max_bytes: {self.max_bytes} is below the 64 KiB minimum")
        if not 1 <= self.batch_size <= 500:
            raise ValueError(f"outbox -> batch_size: {self.batch_size} must be 1..500")


KINDS = ("collar", "perception")


@dataclass(frozen=True)
class AgentConfig:
    device_id: str = field(default="", metadata=doc(
        "this device's id (also its MQTT client id and username); empty = from a trace's device-info frame, "
        "else the kind's default (collar-000, pi-000)"))
    individual_id: str = field(default="", metadata=doc("the animal/person monitored; empty = from the device-info frame"))
    kind: Literal["", "collar", "perception"] = field(default="", metadata=doc(
        "device kind (sets the metrics); empty = from the device-info frame, else collar"))
    source: str = field(default="", metadata=doc(
        "serial port path or pyserial URL, a trace file, or Frigate's events: mqtt://host:port/frigate/events"))
    baudrate: int = field(default=115200, metadata=doc("serial speed"))
    state_dir: str = field(default="edgeloop-state", metadata=doc("folder for the outbox, baselines and models"))
    cloud_public_key: str = field(default="", metadata=doc("PEM file of the cloud's ed25519 key (commands and models)"))
    budget_ms: float = field(default=20.0, metadata=doc("per-window processing budget (ms)"))
    quiet_minutes: int = field(default=12, metadata=doc("resting heart rate: minutes with zero steps before"))
    score_rest: bool = field(default=False, metadata=doc(
        "collars: score hours at rest per day as a fifth metric (rest periods are reported in the daily "
        "summary either way); off: in the 100x60 simulation it raised phase-1 false alerts 0.31 -> 0.36 per "
        "individual-week for one more injury notified (docs/feedback_loop.md)"))
    event_trace_hours: float = field(default=6.0, metadata=doc(
        "hours of engine input each event carries (a state snapshot + rows) for the cloud's release "
        "check to replay through candidate engines; 0: events carry no trace"))
    tz_offset_h: float = field(default=0.0, metadata=doc(
        "the device's local time zone, hours from UTC (a camera's class rates are kept by local hour of day)"))
    learn_days: float = field(default=3.0, metadata=doc(
        "perception: days a camera's class rates by hour of day are learnt before they are checked"))
    frozen_alert_minutes: float = field(default=30.0, metadata=doc(
        "health: a camera repeating one exact detection summary this long is reported frozen"))
    dropout_alert_minutes: float = field(default=60.0, metadata=doc(
        "health: a gap of this many minutes without data is reported (when data comes back)"))
    battery_alert_percent: int = field(default=15, metadata=doc("health: battery at or below this is reported"))
    exit_on_eof: bool = field(default=False, metadata=doc("stop when the source ends (traces, simulations)"))
    drain_timeout: float = field(default=60.0, metadata=doc(
        "at the end of the input, wait this long for the cloud to ack everything (after a stop signal only "
        "while the cloud answers)"))
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata=doc("broker connection"))
    outbox: OutboxConfig = field(default_factory=OutboxConfig, metadata=doc("store-and-forward buffer"))

    def validate(self) -> None:
        try:
            if self.device_id:
                check_id(self.device_id)
            if self.individual_id:
                check_id(self.individual_id, "individual id")
        except TopicError as exc:
            raise ValueError(f"device_id/individual_id: {exc}") from None
        if not 0 <= self.event_trace_hours <= 24:
            raise ValueError(f"event_trace_hours: {self.event_trace_hours} must be in [0, 24]")
        if not -14.0 <= self.tz_offset_h <= 14.0:
            raise ValueError(f"tz_offset_h: {self.tz_offset_h} must be in [-14, 14]")
        if not 0 < self.learn_days <= 60:
            raise ValueError(f"learn_days: {self.learn_days} must be in (0, 60]")
        if self.frozen_alert_minutes <= 0 or self.dropout_alert_minutes <= 0:
            raise ValueError("frozen_alert_minutes and dropout_alert_minutes must be > 0")
        if self.budget_ms <= 0:
            raise ValueError(f"budget_ms: {self.budget_ms} must be > 0")
