"""Errors of the regression suite."""

from __future__ import annotations

from shared.alert_gate import AlertGateError


class RegressionError(Exception):
    """Base class for regression-suite errors."""


class CaseNotFoundError(RegressionError, LookupError):
    """A regression case id does not exist."""


class ReplayError(RegressionError, AlertGateError):
    """A detector config cannot be replayed (bad threshold or factor)."""
