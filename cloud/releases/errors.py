"""Errors of releases and rollouts."""

from __future__ import annotations


class ReleaseError(Exception):
    """Base class for release and rollout errors."""


class ReleaseNotCheckedError(ReleaseError):
    """A rollout was started for a release without a passed release check."""


class RolloutConflictError(ReleaseError):
    """Another rollout of the same model is still active."""


class NoDevicesError(ReleaseError, ValueError):
    """A rollout was started without any device."""


class RolloutNotFoundError(ReleaseError, LookupError):
    """No rollout with that id."""


class BundleReadError(ReleaseError, ValueError):
    """A bundle file cannot be read for a release check."""
