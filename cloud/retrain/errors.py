"""Errors of the retraining rules."""

from __future__ import annotations


class RetrainError(Exception):
    """Base class for retraining errors."""


class DatasetError(RetrainError, ValueError):
    """An exported dataset directory is missing, incomplete or malformed."""
