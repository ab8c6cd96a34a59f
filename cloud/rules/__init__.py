"""Notification rules: declarative TOML policy -> notify | collect_more | uncertain | suppress.

See ``cloud.rules.policy`` for the file format and ``cloud.rules.notify`` for the handler. The
rules hold no SQL: what they read and write goes through ``cloud.rules.history``'s protocols, which
the store's repositories (``cloud.store.alerts``) implement.
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

__all__ = ["Decision", "EventBodyError", "NotificationPolicy", "RulesError", "collect_more_command",
           "due_renotifications", "handle_event", "set_individual_prefs"]
