"""The loop's periodic work in one call, for the aggregator's timer (e.g. once a minute)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloud.feedback.personalise import personalisation_commands
from cloud.feedback.store import implicit_sweep
from cloud.notifiers import Notifier
from cloud.rules.followup import collected_followups
from cloud.rules.notify import Decision, NotificationPolicy, alert_event_body, due_renotifications
from cloud.store.db import CloudStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickResult:
    reminders: tuple[Decision, ...]
    ignored: int
    commands: tuple[tuple[str, str, dict[str, Any]], ...]
    followups: tuple[Decision, ...] = ()  # notifications decided on collect_more's extra data


def periodic(store: CloudStore, policy: NotificationPolicy, now: float,
             notifiers: Sequence[Notifier] = ()) -> TickResult:
    """Decide again on finished collect_more requests, send those notifications and the due
    reminders / deferred notifications through ``notifiers``, mark untouched alerts ignored, and
    return the personalisation config commands to sign and send (``(device_id, "config", args)``)."""
    followups = collected_followups(store, policy, now)
    reminders = due_renotifications(store, policy, now)
    with store.backend.transaction():  # the notifiers' records of these notifications in one transaction
        for d in (*followups, *reminders):
            body = alert_event_body(store, d.alert_id)
            for n in notifiers:
                try:
                    n.send(d, body)
                except Exception:  # a broken notifier must not stop the loop
                    logger.exception("feedback.periodic_notifier_failed", extra={"alert_id": d.alert_id})
    ignored = implicit_sweep(store, now, policy.settings.ignore_after_s)
    commands = personalisation_commands(store, now)
    if reminders or ignored or commands or followups:
        logger.info("feedback.periodic", extra={"reminders": len(reminders), "ignored": ignored,
                                                "commands": len(commands), "followups": len(followups)})
    return TickResult(tuple(reminders), ignored, tuple(commands), tuple(followups))
