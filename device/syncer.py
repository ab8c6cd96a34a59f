"""The agent's side of the uplink: what is in flight, batching, the cloud's acks and refusals.

:class:`Syncer` owns the uplink's state. ``pump()`` handles what paho's network thread reported
(``device/sync.py``: connected, PUBACK, messages) and publishes due outbox rows in batches that fit
one MQTT message; an ack deletes the rows the cloud stored and moves aside the ones it refused for
good; commands are handed to the agent. Every row is checked as a typed record before it is sent:
one that is not (queued by an older agent, or damaged) is refused here, as the cloud would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from device.outbox import Outbox, Row
from device.sync import Uplink
from shared import schemas, topics
from shared.codec import SchemaError, from_json
from shared.mqtt import MqttConfig
from shared.records import Record

logger = logging.getLogger(__name__)
MAX_BATCH_BYTES = 192 * 1024  # below the cloud's 256 KiB message cap, with room for the envelope
DRAIN_IDLE_S = 5.0  # stopping: no ack for this long and the drain ends (the cloud is not answering)


class Syncer:
    """Store-and-forward between one outbox and the cloud (see the module doc)."""

    def __init__(self, device_id: str, outbox: Outbox, mqtt: MqttConfig | None, batch_size: int,
                 counts: Counter[str], on_command: Callable[[bytes], None]) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self.batch_size = batch_size
        self.counts = counts
        self.on_command = on_command
        self.uplink = Uplink(mqtt, device_id, incarnation=outbox.incarnation) if mqtt is not None else None
        self._inflight: dict[int, list[int]] = {}  # MQTT message id -> the seqs it carries

    @property
    def connected(self) -> bool:
        return self.uplink is not None and self.uplink.connected

    def start(self) -> None:
        if self.uplink is not None:
            self.uplink.start()

    def stop(self) -> None:
        """Publish a clean 'stopped' status and disconnect."""
        if self.uplink is not None:
            self.uplink.stop()

    # ---- the pump ----------------------------------------------------------------------------
    def pump(self) -> None:
        """Handle network events and publish due outbox rows."""
        if self.uplink is None:
            return
        for ev in self.uplink.poll():
            if ev.kind == "puback":
                seqs = self._inflight.pop(ev.mid, [])
                if ev.ok:
                    self.outbox.mark_published(seqs)
                else:
                    self.counts["publish_refused"] += 1
                    logger.warning("sync.publish_refused", extra={"reason": ev.detail})
            elif ev.kind == "message":
                self.handle_message(ev.topic, ev.payload)
            elif ev.kind == "connected":
                self._inflight.clear()  # anything unacked becomes due again via the outbox
                self.outbox.unmark_published()  # sync.connected is logged by the uplink
        while self.uplink.connected and len(self._inflight) < self.uplink.max_inflight:
            if not self._send_batch():
                break

    def _send_batch(self) -> bool:
        """Publish one batch of due rows not in flight; False when there is nothing to send."""
        assert self.uplink is not None
        busy = {s for seqs in self._inflight.values() for s in seqs}
        rows = [r for r in self.outbox.due(self.batch_size * 4) if r.seq not in busy]
        rows = fit_batch(rows, self.batch_size, MAX_BATCH_BYTES)
        if not rows:
            return False
        records = self._records(rows)
        if not records:
            return True  # every row was refused here: look again
        mid = self.uplink.send(records)
        if mid is None:
            return False
        self._inflight[mid] = [r.seq for r in records]
        return True

    def _records(self, rows: list[Row]) -> list[Record]:
        out, refused = records_of(rows)
        self._refuse(refused)
        return out

    def _refuse(self, refused: list[tuple[int, str]]) -> None:
        for row in self.outbox.reject(refused):
            logger.error("sync.record_rejected", extra={"device_id": self.device_id, "seq": row.seq,
                                                        "kind": row.kind, "reason": row.reason})

    # ---- downlink ----------------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes) -> None:
        if topic == topics.ack(self.device_id):
            try:
                msg = schemas.decode(payload)
                if not isinstance(msg, schemas.Ack) or msg.device_id != self.device_id:
                    raise schemas.SchemaError("not an ack for this device")
            except schemas.SchemaError as exc:
                self.counts["ack_rejected"] += 1
                logger.warning("sync.ack_rejected", extra={"reason": str(exc)})
                return
            self.on_ack(msg)
        elif topic == topics.commands(self.device_id):
            self.on_command(payload)
        else:
            self.counts["unexpected_topic"] += 1

    def on_ack(self, msg: schemas.Ack) -> None:
        """Forget what the cloud stored; move aside what it refused for good. An ack for another
        incarnation (this device before a reset) says nothing about these rows."""
        if msg.incarnation != self.outbox.incarnation:
            self.counts["ack_other_incarnation"] += 1
            logger.warning("sync.ack_other_incarnation", extra={"device_id": self.device_id,
                                                                "incarnation": msg.incarnation})
            return
        self.outbox.ack(list(msg.seqs))
        self._refuse([(r.seq, r.reason) for r in msg.rejected])

    # ---- stopping ----------------------------------------------------------------------------
    def drain(self, timeout: float, *, hurry: threading.Event | None = None, patient: bool = True) -> bool:
        """Pump until the cloud acknowledged every row; True when nothing is left (the outbox keeps
        the rest for the next start either way).

        ``patient`` (the input ended): wait up to ``timeout`` s, through reconnects. Not patient (a
        stop was asked for): only while connected and acks keep coming, each within
        ``DRAIN_IDLE_S``; with the cloud out of reach that is not at all. ``hurry`` (a second stop
        request) ends any drain at once."""
        left = self.outbox.pending_count()
        if self.uplink is None or not left:
            return not left
        start = last_ack = time.monotonic()
        why = "timeout"
        while left:
            now = time.monotonic()
            if hurry is not None and hurry.is_set():
                why = "hurried"
                break
            if now - start >= timeout:
                break
            if not patient and not self.uplink.connected:
                why = "unreachable"
                break
            if not patient and now - last_ack >= DRAIN_IDLE_S:
                why = "no_acks"
                break
            self.pump()
            n = self.outbox.pending_count()
            if n < left:
                left, last_ack = n, time.monotonic()
            time.sleep(0.02)
        if left:
            logger.info("sync.drain_stopped", extra={"device_id": self.device_id, "why": why, "pending": left,
                                                     "seconds": round(time.monotonic() - start, 3)})
        return not left


def records_of(rows: list[Row]) -> tuple[list[Record], list[tuple[int, str]]]:
    """Outbox rows as typed records, each checked as the cloud will; the ones that fail are
    returned as (seq, reason) to be refused here."""
    out, refused = [], []
    for r in rows:
        try:
            out.append(from_json(Record, {"seq": r.seq, "kind": r.kind, "ts": r.ts,
                                          "individual_id": r.individual_id, "body": r.body}, f"record {r.seq}"))
        except SchemaError as exc:
            refused.append((r.seq, f"refused on the device: {exc}"[:schemas.MAX_REASON_CHARS]))
    return out, refused


def fit_batch(rows: list[Row], max_rows: int, max_bytes: int) -> list[Row]:
    """The leading rows that fit one MQTT message (always at least one: rows are capped smaller)."""
    out: list[Row] = []
    total = 0
    for r in rows[:max_rows]:
        if out and total + r.size > max_bytes:
            break
        out.append(r)
        total += r.size
    return out
