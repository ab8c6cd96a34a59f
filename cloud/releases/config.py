"""Staged-rollout settings from TOML (see ``cloud/default_rollout.toml``); unknown keys rejected."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.config import doc, load

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "default_rollout.toml"


@dataclass(frozen=True)
class CohortConfig:
    shadow_percent: float = field(default=20.0, metadata=doc("devices (by id hash) that run the candidate in shadow"))
    canary_percent: float = field(default=10.0, metadata=doc("devices that promote it first; a subset of the shadow cohort"))
    salt: str = field(default="edgeloop-cohorts", metadata=doc("hash salt: same salt, same cohorts"))

    def validate(self) -> None:
        if not 0 < self.canary_percent <= self.shadow_percent <= 100:
            raise ValueError(f"need 0 < canary_percent ({self.canary_percent}) <= shadow_percent "
                             f"({self.shadow_percent}) <= 100")


@dataclass(frozen=True)
class StageConfig:
    min_hours: float = field(default=24.0, metadata=doc("the stage lasts at least this long"))
    min_device_days: float = field(default=0.0, metadata=doc("device-days on the candidate needed to advance"))
    min_alerts: int = field(default=0, metadata=doc("notified alerts from candidate devices needed to advance"))
    max_hours: float = field(default=0.0, metadata=doc("halt and roll back when the stage has not gathered its "
                                                       "evidence after this long (0: no limit)"))

    def validate(self) -> None:
        if self.min_hours < 0 or self.min_device_days < 0 or self.min_alerts < 0 or self.max_hours < 0:
            raise ValueError("min_hours, min_device_days, min_alerts and max_hours must be >= 0")
        if self.max_hours and self.max_hours < self.min_hours:
            raise ValueError(f"max_hours {self.max_hours:g} must be 0 or >= min_hours {self.min_hours:g}")


@dataclass(frozen=True)
class StagesConfig:
    shadow: StageConfig = field(default_factory=lambda: StageConfig(24.0, 5.0, 0, 168.0))
    canary: StageConfig = field(default_factory=lambda: StageConfig(72.0, 20.0, 10, 336.0))
    fleet: StageConfig = field(default_factory=lambda: StageConfig(24.0, 0.0, 0))


@dataclass(frozen=True)
class LimitsConfig:
    ack_timeout_hours: float = field(default=24.0, metadata=doc("an unacknowledged command fails after this"))
    max_failed_installs: int = field(default=3, metadata=doc("halt when more devices than this fail a step"))
    max_failed_fraction: float = field(default=0.1, metadata=doc("... or more than this fraction of those sent a command"))
    min_sent_for_fraction: int = field(default=10, metadata=doc("the fraction applies from this many devices sent"))
    min_labelled: int = field(default=10, metadata=doc("labelled alerts per group before precision is compared"))
    max_precision_drop: float = field(default=0.10, metadata=doc("halt when control precision - candidate precision exceeds this"))
    min_device_days_for_rates: float = field(default=5.0, metadata=doc("device-days per group before alert rates are compared"))
    min_alerts_for_rates: int = field(default=5, metadata=doc("candidate alerts needed before alert rates are compared"))
    max_alert_rate_ratio: float = field(default=1.5, metadata=doc("halt when the candidate's alert rate exceeds control's x this"))
    alert_rate_floor: float = field(default=0.05, metadata=doc("alerts/device-day: control rates below this count as this"))
    min_notified_for_ignore: int = field(default=10, metadata=doc("notified alerts per group before ignore rates are compared"))
    max_ignore_rate_increase: float = field(default=0.15, metadata=doc("halt when the ignore rate rises more than this"))
    min_shadow_windows: int = field(default=500, metadata=doc("shadow windows before agreement is judged"))
    min_shadow_agreement: float = field(default=0.0, metadata=doc("halt when shadow/active agreement is below this (0 = off)"))

    def validate(self) -> None:
        if self.ack_timeout_hours <= 0 or self.max_failed_installs < 0 or not 0 <= self.max_failed_fraction <= 1:
            raise ValueError("ack_timeout_hours > 0, max_failed_installs >= 0, 0 <= max_failed_fraction <= 1")
        if self.max_alert_rate_ratio < 1 or self.alert_rate_floor <= 0:
            raise ValueError("max_alert_rate_ratio >= 1 and alert_rate_floor > 0 required")
        if not 0 <= self.min_shadow_agreement <= 1 or self.max_precision_drop < 0 or self.max_ignore_rate_increase < 0:
            raise ValueError("0 <= min_shadow_agreement <= 1; max_precision_drop, max_ignore_rate_increase >= 0")


@dataclass(frozen=True)
class RolloutConfig:
    cohorts: CohortConfig = field(default_factory=CohortConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


def load_rollout_config(path: str | Path | None = None) -> RolloutConfig:
    """Load rollout settings (default: ``cloud/default_rollout.toml``); ConfigError names the key."""
    return load(RolloutConfig, path if path is not None else DEFAULT_PATH)
