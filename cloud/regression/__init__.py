"""Inherited regression cases (every confirmed miss and false alarm, kept forever) and the
release check that replays them through a candidate and the current detector."""

from cloud.regression.cases import (
    RegressionCase,
    RegressionConfig,
    capture_cases,
    get_case,
    list_cases,
    mark_sensitive,
)
from cloud.regression.check import (
    CaseOutcome,
    ReleaseCheck,
    ReleaseRef,
    check_release,
    detector_sha256,
    passed_check_id,
)
from cloud.regression.errors import (
    CaseNotFoundError,
    RegressionError,
    ReplayError,
)
from cloud.regression.replay import (
    AlertGate,
    EventNumbers,
    Replayer,
    ThresholdReplayer,
    as_replayer,
    case_numbers,
    window_numbers,
)

__all__ = [
    "AlertGate", "CaseNotFoundError", "CaseOutcome", "EventNumbers",
    "RegressionCase", "RegressionConfig", "RegressionError", "ReleaseCheck", "ReleaseRef",
    "Replayer", "ReplayError", "ThresholdReplayer", "as_replayer", "capture_cases",
    "case_numbers", "check_release", "detector_sha256", "window_numbers", "get_case", "list_cases",
    "mark_sensitive", "passed_check_id",
]
