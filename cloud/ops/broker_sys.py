"""The broker's own health from Mosquitto's ``$SYS/broker/...`` topics (published every
``sys_interval`` seconds, 10 by default): clients, messages and bytes in/out, dropped, stored,
subscriptions. The aggregator's network thread calls :meth:`BrokerSys.update`; readers take
:meth:`snapshot`.
"""

from __future__ import annotations

import threading
import time

SYS_FILTER = "$SYS/broker/#"
# $SYS topic (after "$SYS/broker/") -> our name; the values are cumulative counts or levels
FIELDS: dict[str, str] = {
    "clients/connected": "clients_connected",
    "clients/disconnected": "clients_disconnected",
    "clients/maximum": "clients_maximum",
    "messages/received": "messages_received",
    "messages/sent": "messages_sent",
    "messages/stored": "messages_stored",
    "store/messages/bytes": "stored_bytes",
    "publish/messages/dropped": "messages_dropped",
    "publish/messages/received": "publish_received",
    "publish/messages/sent": "publish_sent",
    "bytes/received": "bytes_received",
    "bytes/sent": "bytes_sent",
    "subscriptions/count": "subscriptions",
    "retained messages/count": "retained",
    "uptime": "uptime_seconds",
}
COUNTERS = frozenset({"messages_received", "messages_sent", "messages_dropped", "publish_received",
                      "publish_sent", "bytes_received", "bytes_sent"})


class BrokerSys:
    def __init__(self) -> None:
        self._values: dict[str, float] = {}
        self.version = ""
        self.updated = 0.0
        self._lock = threading.Lock()

    def update(self, topic: str, payload: bytes) -> None:
        key = topic.removeprefix("$SYS/broker/")
        if key == "version":
            self.version = payload.decode("utf-8", "replace")[:80]
            return
        name = FIELDS.get(key)
        if name is None:
            return
        text = payload.decode("ascii", "replace").split()[0] if payload else ""
        try:
            value = float(text)
        except ValueError:
            return
        with self._lock:
            self._values[name] = value
            self.updated = time.time()

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)
