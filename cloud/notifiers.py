"""Ways to tell an owner: each ``Notifier.send(decision, event_body)`` delivers one notification.

Notifiers never raise for delivery problems: they count ``sent`` and ``failures`` and log
``notify.failed``, so one unreachable webhook cannot stop the aggregator. ``alert_payload`` is the
JSON every notifier sends (``v``/``type`` like the other messages in ``shared.schemas``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

from cloud.rules.notify import Decision
from shared import topics
from shared.schemas import SCHEMA_VERSION

logger = logging.getLogger(__name__)
REMINDER_RULES = ("renotify", "deferred-delivery")


class DeliveryError(Exception):
    """One delivery attempt failed; the message says how (HTTP status, timeout, refused)."""


class Notifier(Protocol):
    def send(self, decision: Decision, event_body: dict[str, Any]) -> None: ...


def alert_payload(decision: Decision, event_body: dict[str, Any]) -> dict[str, Any]:
    """The owner-facing alert message."""
    return {
        "v": SCHEMA_VERSION, "type": "alert", "alert_id": decision.alert_id,
        "incident_id": decision.incident_id, "individual_id": decision.individual_id,
        "device_id": decision.device_id, "seq": decision.seq, "ts": decision.ts,
        "rule": decision.rule, "reason": decision.reason,
        "reminder": decision.rule in REMINDER_RULES,
        "severity": event_body.get("severity"), "metrics": event_body.get("metrics", []),
        "score": event_body.get("score"), "start_ts": event_body.get("start_ts"),
        "model_version": event_body.get("model_version"),
    }


def encode_alert(decision: Decision, event_body: dict[str, Any]) -> bytes:
    """The alert payload as compact JSON bytes (what every transport sends)."""
    return _encode(decision, event_body)


def _encode(decision: Decision, event_body: dict[str, Any]) -> bytes:
    return json.dumps(alert_payload(decision, event_body), separators=(",", ":"),
                      allow_nan=False, default=str).encode()


class _Counted:
    def __init__(self) -> None:
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None

    def _failed(self, decision: Decision, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.warning("notify.failed", extra={"notifier": type(self).__name__,
                                               "alert_id": decision.alert_id,
                                               "individual_id": decision.individual_id,
                                               "error": self.last_error})


class LogNotifier(_Counted):
    """Logs ``notify.sent`` with the payload in ``extra`` (demo, tests, dry runs)."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        super().__init__()
        self.log = log or logger
        self.payloads: list[dict[str, Any]] = []

    def send(self, decision: Decision, event_body: dict[str, Any]) -> None:
        payload = alert_payload(decision, event_body)
        self.payloads.append(payload)
        self.sent += 1
        self.log.info("notify.sent", extra={"alert_id": decision.alert_id,
                                            "individual_id": decision.individual_id,
                                            "payload": payload})


class WebhookNotifier(_Counted):
    """POSTs the JSON payload to an http(s) URL; non-2xx, timeouts and refusals are failures."""

    def __init__(self, url: str, timeout: float = 5.0, headers: dict[str, str] | None = None,
                 hmac_secret: str | None = None) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook url {url!r} must be http(s)://host[:port]/path")
        self.url, self.timeout, self.hmac_secret = url, timeout, hmac_secret
        self.headers = {"Content-Type": "application/json", "User-Agent": "edgeloop-cloud", **(headers or {})}

    def deliver(self, body: bytes) -> None:
        """One POST; raises DeliveryError naming what went wrong (status, timeout, refusal)."""
        headers = dict(self.headers)
        if self.hmac_secret:
            digest = hmac.new(self.hmac_secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Edgeloop-Signature"] = f"sha256={digest}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - scheme checked
                resp.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"HTTP {exc.code} {exc.reason} from {self.url}") from None
        except TimeoutError:
            raise DeliveryError(f"no answer from {self.url} within {self.timeout:g} s") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"cannot reach {self.url}: {reason}") from None

    def send(self, decision: Decision, event_body: dict[str, Any]) -> None:
        try:
            self.deliver(_encode(decision, event_body))
        except DeliveryError as exc:
            self._failed(decision, exc)
            return
        self.sent += 1
        logger.info("notify.sent", extra={"notifier": "webhook", "alert_id": decision.alert_id,
                                          "individual_id": decision.individual_id})


class MqttNotifier(_Counted):
    """Publishes to ``shared.topics.owner_alerts(individual_id)`` through an injected
    ``publish(topic, payload)`` (the aggregator's client; no paho here)."""

    def __init__(self, publish: Callable[[str, bytes], None]) -> None:
        super().__init__()
        self.publish = publish

    def send(self, decision: Decision, event_body: dict[str, Any]) -> None:
        try:
            self.publish(topics.owner_alerts(decision.individual_id), _encode(decision, event_body))
        except Exception as exc:  # a transport error must not stop the caller
            self._failed(decision, exc)
            return
        self.sent += 1


class FanOutNotifier(_Counted):
    """Sends through several notifiers; each keeps its own counts."""

    def __init__(self, notifiers: Iterable[Notifier]) -> None:
        super().__init__()
        self.notifiers = list(notifiers)

    def send(self, decision: Decision, event_body: dict[str, Any]) -> None:
        for n in self.notifiers:
            try:
                n.send(decision, event_body)
            except Exception as exc:  # a third-party notifier broke its contract
                self._failed(decision, exc)
        self.sent += 1
