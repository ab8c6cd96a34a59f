"""Signed downlink commands (ed25519, QoS 1), each bound to the device's current incarnation, with
an expiry and a per-device ``(epoch, counter)`` kept in the cloud store (device/commands.py checks
them). A device that refuses a fresh command because the cloud's counter went back (the database
was restored from a backup) asks for a re-sync: :meth:`Commander.resync` moves the device to a new
epoch with a signed ``resync`` command, and the commands after it are accepted again."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.store.commands import CommandRepository
from cloud.store.db import CloudStore
from shared import schemas, topics
from shared.command_signing import sign_command
from shared.records import CommandReport

logger = logging.getLogger(__name__)
COMMAND_TTL_S = 24 * 3600.0  # a command not run within this (device timeline) is refused as stale
RESYNC = "resync"
MAX_EPOCH = 2**40  # a re-sync request naming a larger epoch is refused (it could never be answered)


class CommandSender(Protocol):
    """What the aggregator needs of a commander: sign and send a command, answer a device's report
    (a re-sync request). :class:`Commander`; the fleet simulation wraps one."""

    def send(self, device_id: str, name: str, args: dict[str, Any], reason: str = "",
             command_id: str = "") -> schemas.Command | None: ...

    def on_report(self, device_id: str, report: CommandReport) -> schemas.Command | None: ...


class Commander:
    """Signs and publishes commands; every command sent is stored with its reason."""

    def __init__(self, store: CloudStore, key: Ed25519PrivateKey, publish: Callable[[str, bytes], None],
                 clock: Callable[[], float], ttl: float = COMMAND_TTL_S) -> None:
        self.store, self.key, self.publish, self.clock, self.ttl = store, key, publish, clock, ttl
        self.repo = CommandRepository(store.backend)

    def position(self, device_id: str) -> tuple[int, int]:
        """The (epoch, counter) of the last command signed for ``device_id``."""
        return self.repo.position(device_id)

    def incarnation(self, device_id: str) -> str:
        """The device's current incarnation (its outbox's life) as the cloud knows it, "" if none."""
        return self.store.current_incarnation(device_id)

    def send(self, device_id: str, name: str, args: dict[str, Any], reason: str = "",
             command_id: str = "", *, epoch: int | None = None) -> schemas.Command:
        """Sign the next command for the device (``epoch``: move it to that epoch, counter 1)."""
        with self.store.backend.transaction():
            self.store.backend.lock_keys([f"command:{device_id}"])  # PostgreSQL: one signer per device at a time
            cur_epoch, counter = self.position(device_id)
            if epoch is not None:
                cur_epoch, counter = epoch, 0
            counter += 1
            self.repo.set_position(device_id, cur_epoch, counter)
            now = self.clock()
            cmd = sign_command(self.key, schemas.Command(
                device_id, command_id or f"c-{uuid.uuid4().hex[:12]}", name, counter, args,
                expires_at=now + self.ttl, epoch=cur_epoch, incarnation=self.incarnation(device_id)))
            self.repo.save({
                "command_id": cmd.command_id, "device_id": device_id, "name": name, "counter": counter,
                "args": json.dumps(args)[:2000], "sent_at": now, "reason": reason, "epoch": cur_epoch,
                "expires_at": cmd.expires_at, "incarnation": cmd.incarnation})
        self.publish(topics.commands(device_id), schemas.encode(cmd))
        logger.info("cloud.command_sent", extra={"device_id": device_id, "command": name})
        return cmd

    def resync(self, device_id: str, epoch: int, counter: int) -> schemas.Command | None:
        """A device's answer to a refused command: its last accepted (epoch, counter). If the cloud
        is behind it (its counter went back), move the device to a new epoch with a signed
        ``resync``; if it is, or level (the refused command was a replay, a redelivery or an older
        one; the next command passes anyway), nothing."""
        mine = self.position(device_id)
        if mine >= (epoch, counter):
            logger.info("cloud.resync_not_needed", extra={"device_id": device_id, "device": f"{epoch}/{counter}",
                                                          "cloud": f"{mine[0]}/{mine[1]}"})
            return None
        new = max(mine[0], epoch) + 1
        logger.warning("cloud.resync", extra={
            "device_id": device_id, "device": f"{epoch}/{counter}", "cloud": f"{mine[0]}/{mine[1]}", "epoch": new,
            "hint": "the device had accepted commands this store does not know (restored from a backup?)"})
        return self.send(device_id, RESYNC, {}, reason=f"re-sync: device at {epoch}/{counter}", epoch=new)

    def on_report(self, device_id: str, report: CommandReport) -> schemas.Command | None:
        """A command report from the device: a re-sync request is answered (see :meth:`resync`)."""
        ask = report.data.get("resync") if not report.ok else None
        if not isinstance(ask, dict):
            return None
        epoch, counter = ask.get("epoch"), ask.get("counter")
        if not (type(epoch) is int and type(counter) is int and 0 <= epoch < MAX_EPOCH and 0 <= counter < 2**63):
            logger.warning("cloud.resync_refused", extra={"device_id": device_id, "request": str(ask)[:200]})
            return None
        return self.resync(device_id, epoch, counter)
