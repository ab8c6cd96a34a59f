"""Named feedback errors. Each message is one line: what was expected, what was found, what to do.

``status`` is the HTTP status the feedback endpoint answers with.
"""

from __future__ import annotations


class FeedbackError(ValueError):
    """Base of all feedback rejections."""

    status = 400


class InvalidFeedbackError(FeedbackError):
    """The feedback message itself is malformed (unknown action, missing label, bad JSON)."""


class UnknownAlertError(FeedbackError):
    """The alert id does not name a decided alert."""

    status = 404


class WrongIndividualError(FeedbackError):
    """The feedback names a different individual than the alert's."""

    status = 403


class UnknownIndividualError(FeedbackError):
    """An unprompted report names an individual the cloud has no data for."""

    status = 404
