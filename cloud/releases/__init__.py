"""Releases: the release check entry point and the staged rollout (shadow -> canary -> fleet)
with automatic halt and rollback."""

from cloud.releases.cli import (
    load_bundle_for_check,
    release_check_cli,
    rollout_status_cli,
    start_rollout_cli,
)
from cloud.releases.config import RolloutConfig, load_rollout_config
from cloud.releases.errors import (
    BundleReadError,
    NoDevicesError,
    ReleaseError,
    ReleaseNotCheckedError,
    RolloutConflictError,
    RolloutNotFoundError,
)
from cloud.releases.rollout import (
    DeviceAction,
    GroupMetrics,
    RolloutManager,
    cohort_of,
    current_release,
    group_metrics,
    parse_command_id,
    register_release,
    rollout_ids,
)
from cloud.releases.status import format_rollout_table, rollout_status

__all__ = [
    "BundleReadError", "DeviceAction", "NoDevicesError", "GroupMetrics", "ReleaseError", "ReleaseNotCheckedError",
    "RolloutConfig", "RolloutConflictError", "RolloutManager", "RolloutNotFoundError", "cohort_of",
    "current_release", "format_rollout_table", "group_metrics",
    "load_bundle_for_check", "load_rollout_config", "parse_command_id", "register_release", "release_check_cli",
    "rollout_ids", "rollout_status", "rollout_status_cli", "start_rollout_cli",
]
