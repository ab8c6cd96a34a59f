"""The aggregator's inbox: bounded, and fair between senders (issue 11 item 6).

One FIFO per sender (a device id, from the topic), served round-robin: a device flooding its own
topic waits behind itself, never in front of the others. Bounds: ``max_items`` messages and
``max_bytes`` payload bytes in all; ``per_client`` messages and a quarter of ``max_bytes`` for
one sender. A message that does not fit is dropped and counted (``dropped``, by reason): the
sender's own newest when the sender is over its share, else the newest of the longest queue.

Dropping an uplink loses nothing: the device keeps every record until the cloud's ack (the
``ack`` topic, not the MQTT PUBACK) and sends it again after its ``resend_after``. The PUBACK is
paho's (no ``manual_ack``): MQTT redelivers an unacknowledged QoS 1 message only when the session
resumes, and holding PUBACKs would fill the broker's in-flight window for the aggregator's
subscription, stalling every device behind the flood.

Thread-safe: paho's network thread puts, the aggregator's thread gets. The ``queue.Queue``
subset the service and the fleet simulator use (``get``, ``get_nowait``, ``qsize``; ``Empty``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from typing import Generic, TypeVar

T = TypeVar("T")
DROP_REASONS = ("sender_full", "inbox_full", "too_big")


class FairInbox(Generic[T]):
    """Per-sender FIFOs served round-robin, bounded in messages and bytes (see the module doc)."""

    def __init__(self, max_items: int = 10_000, per_client: int = 1_000, max_bytes: int = 64 * 2**20) -> None:
        if not 1 <= per_client <= max_items:
            raise ValueError(f"per_client {per_client} must be 1 .. max_items ({max_items})")
        if max_bytes < 4:
            raise ValueError(f"max_bytes {max_bytes} must be >= 4")
        self.max_items = max_items
        self.per_client = per_client
        self.max_bytes = max_bytes
        self.client_bytes = max_bytes // 4
        self._queues: dict[str, deque[tuple[T, int]]] = {}
        self._bytes: Counter[str] = Counter()
        self._turns: deque[str] = deque()  # senders with messages waiting, in serving order
        self._n = 0
        self._total_bytes = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.dropped: Counter[str] = Counter()  # by reason (DROP_REASONS)
        self.dropped_by: Counter[str] = Counter()  # by sender, since the last ``take_dropped_by``
        self.put_total = 0

    def put(self, client: str, item: T, size: int = 0) -> tuple[str, str] | None:
        """Queue ``item`` (``size`` bytes) for ``client``. Returns None, or ``(sender, reason)`` of
        the message dropped to keep the bounds: ``client``'s (this item was not queued) or another
        sender's newest (this item was queued)."""
        with self._lock:
            self.put_total += 1
            if size > self.client_bytes:
                return self._drop(client, "too_big")
            q = self._queues.get(client)
            if q is not None and (len(q) >= self.per_client or self._bytes[client] + size > self.client_bytes):
                return self._drop(client, "sender_full")
            reason = None
            while self._n >= self.max_items or self._total_bytes + size > self.max_bytes:
                victim = max(self._queues, key=lambda c: len(self._queues[c]))
                if victim == client or len(self._queues[victim]) <= (len(q) if q is not None else 0) + 1:
                    return self._drop(client, "inbox_full")  # nobody holds more than this sender
                _, vsize = self._queues[victim].pop()  # the victim's newest
                self._account(victim, -1, -vsize)
                reason = self._drop(victim, "inbox_full")
            if q is None:
                q = self._queues[client] = deque()
                self._turns.append(client)
            q.append((item, size))
            self._account(client, 1, size)
            self._ready.notify()
            return reason

    def _drop(self, client: str, reason: str) -> tuple[str, str]:
        self.dropped[reason] += 1
        self.dropped_by[client] += 1
        return client, reason

    def _account(self, client: str, n: int, size: int) -> None:
        self._n += n
        self._total_bytes += size
        self._bytes[client] += size
        if not self._queues[client]:
            del self._queues[client]
            del self._bytes[client]
            self._turns.remove(client)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The next item, round-robin over senders; ``queue.Empty`` when none comes."""
        with self._lock:
            if block:
                end = None if timeout is None else time.monotonic() + timeout
                while not self._n:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        raise queue.Empty
                    self._ready.wait(left)
            elif not self._n:
                raise queue.Empty
            client = self._turns.popleft()
            q = self._queues[client]
            item, size = q.popleft()
            if q:
                self._turns.append(client)  # its next message waits for everyone else's turn
            self._n -= 1
            self._total_bytes -= size
            self._bytes[client] -= size
            if not q:
                del self._queues[client]
                del self._bytes[client]
            return item

    def get_nowait(self) -> T:
        return self.get(block=False)

    def qsize(self) -> int:
        return self._n

    def nbytes(self) -> int:
        return self._total_bytes

    def senders(self) -> int:
        return len(self._queues)

    def take_dropped_by(self, top: int = 5) -> list[tuple[str, int]]:
        """The senders with the most drops since the last call (then forgotten: bounded memory)."""
        with self._lock:
            out = self.dropped_by.most_common(top)
            self.dropped_by = Counter()
            return out
