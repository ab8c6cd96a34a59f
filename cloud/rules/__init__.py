"""Notification rules: declarative TOML policy -> notify | collect_more | uncertain | suppress.

See ``cloud.rules.policy`` for the file format and ``cloud.rules.notify`` for the handler.
"""

from cloud.rules.notify import (
    Decision,
    EventBodyError,
    NotificationPolicy,
    RulesError,
    collect_more_command,
    due_renotifications,
    handle_event,
    set_individual_prefs,
)
from cloud.rules.schema import ensure_schema

__all__ = ["Decision", "EventBodyError", "NotificationPolicy", "RulesError", "collect_more_command",
           "due_renotifications", "ensure_schema", "handle_event", "set_individual_prefs"]
