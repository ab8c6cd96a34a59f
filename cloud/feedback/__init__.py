"""Owner feedback: explicit and implicit answers to alerts, and the personalisation they cause.

Entry points: ``record_feedback`` (CLI, HTTP, MQTT all end here), ``feedback_from_mqtt``,
``implicit_sweep``, ``personalisation_commands``, and ``periodic`` (all timed work in one call); ``cloud.feedback.http`` serves POST /feedback.
"""

from cloud.feedback.errors import (
    FeedbackError,
    InvalidFeedbackError,
    UnknownAlertError,
    UnknownIndividualError,
    WrongIndividualError,
)
from cloud.feedback.periodic import TickResult, periodic
from cloud.feedback.personalise import personalisation_commands, personalisations
from cloud.feedback.store import (
    ERROR_COUNTS,
    FeedbackResult,
    feedback_from_mqtt,
    implicit_sweep,
    list_alerts,
    record_feedback,
)

__all__ = ["ERROR_COUNTS", "FeedbackError", "FeedbackResult", "InvalidFeedbackError",
           "UnknownAlertError", "UnknownIndividualError", "WrongIndividualError",
           "TickResult", "feedback_from_mqtt", "implicit_sweep", "list_alerts", "periodic",
           "personalisation_commands", "personalisations", "record_feedback"]
