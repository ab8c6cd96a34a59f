"""MQTT topic names. Build topics with these functions, never with scattered f-strings.

Every per-device topic sits under ``edgeloop/v1/dev/<device_id>/`` so one broker ACL pattern
(``edgeloop/v1/dev/%u/#``) confines a device to its own topics.
"""

from __future__ import annotations

import re

ROOT = "edgeloop/v1"
DEVICE_PREFIX = f"{ROOT}/dev/"
SHARE_GROUP = "edgeloop-cloud"
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TopicError(ValueError):
    """A device or individual id cannot be used in a topic."""


def check_id(value: str, what: str = "device id") -> str:
    """Ids are 1-64 chars of [A-Za-z0-9_.-]: no '/', '+', '#' or '$' can sneak into a topic."""
    if not isinstance(value, str) or not _ID.match(value):
        raise TopicError(f"{what} {value!r} is invalid: use 1-64 characters from A-Z a-z 0-9 _ . -")
    return value


def device_root(device_id: str) -> str:
    return f"{ROOT}/dev/{check_id(device_id)}"


def uplink(device_id: str) -> str:
    """Device -> cloud: batches of outbox records (events, summaries, raw windows)."""
    return f"{device_root(device_id)}/up"


def status(device_id: str) -> str:
    """Device -> cloud, retained: online / offline (last will) / stopped."""
    return f"{device_root(device_id)}/status"


def ack(device_id: str) -> str:
    """Cloud -> device: application-level acknowledgement of stored record sequence numbers."""
    return f"{device_root(device_id)}/ack"


def commands(device_id: str) -> str:
    """Cloud -> device: signed commands (config, collect more data, model releases)."""
    return f"{device_root(device_id)}/cmd"


def replies(device_id: str) -> str:
    """Device -> cloud: acknowledgements and results of commands."""
    return f"{device_root(device_id)}/reply"


def owner_alerts(individual_id: str) -> str:
    """Cloud -> owner app: notifications for one individual."""
    return f"{ROOT}/owner/{check_id(individual_id, 'individual id')}/alerts"


def owner_feedback(individual_id: str) -> str:
    """Owner app -> cloud: explicit and implicit feedback on alerts."""
    return f"{ROOT}/owner/{check_id(individual_id, 'individual id')}/feedback"


def cloud_status(instance: str) -> str:
    """Cloud -> cloud and operators, retained: an aggregator instance's presence (online with its
    host, pid and start time; offline as its last will; stopped at a clean exit)."""
    return f"{ROOT}/cloud/{check_id(instance, 'cloud instance')}/status"


CLOUD_STATUS_FILTER = f"{ROOT}/cloud/+/status"


# Subscription filters used by the cloud (shared, so N aggregators split the load).
def cloud_uplink_filter(shared: bool = True) -> str:
    f = f"{ROOT}/dev/+/up"
    return f"$share/{SHARE_GROUP}/{f}" if shared else f


STATUS_FILTER = f"{ROOT}/dev/+/status"
FEEDBACK_FILTER = f"{ROOT}/owner/+/feedback"


def device_id_from_topic(topic: str) -> str:
    """Extract the device id from a per-device topic; TopicError when the topic is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{ROOT}/dev":
        raise TopicError(f"topic {topic!r} is not a per-device topic ({ROOT}/dev/<id>/<kind>)")
    return check_id(parts[3])


def individual_id_from_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{ROOT}/owner":
        raise TopicError(f"topic {topic!r} is not an owner topic ({ROOT}/owner/<id>/<kind>)")
    return check_id(parts[3], "individual id")
