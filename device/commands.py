"""Downlink commands: verify signature and replay counter, then dispatch to plain handlers.

Commands are ``shared.schemas.Command`` messages signed by the cloud's ed25519 key over the
canonical JSON of every field but ``sig``. ``counter`` must exceed the last one accepted (kept in
the device's SQLite), so a captured command cannot be replayed. Every refusal is counted and
answered; nothing here raises to the caller.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.errors import CommandError
from shared.command_signing import signed_bytes
from shared.schemas import Command, SchemaError, decode
from shared.signing import SigningError, verify_message

logger = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandHandler:
    """Device side. ``handle(payload)`` returns (command_id, ok, detail, data) and never raises."""

    def __init__(self, device_id: str, public_key: Ed25519PublicKey | None,
                 load_counter: Callable[[], int], save_counter: Callable[[int], None]) -> None:
        self.device_id = device_id
        self.public_key = public_key
        self._load, self._save = load_counter, save_counter
        self.handlers: dict[str, Handler] = {}
        self.counts: Counter[str] = Counter()

    def register(self, name: str, fn: Handler) -> None:
        self.handlers[name] = fn

    def handle(self, payload: bytes) -> tuple[str, bool, str, dict[str, Any]]:
        try:
            cmd = self._verify(payload)
        except CommandError as exc:
            self.counts["rejected"] += 1
            logger.warning("commands.rejected", extra={"reason": str(exc)})
            return "", False, str(exc), {}
        try:
            data = self.handlers[cmd.name](cmd.args)
        except Exception as exc:  # a handler failure is reported, never crashes the agent
            self.counts["failed"] += 1
            logger.warning("commands.failed", extra={"command": cmd.name, "reason": str(exc)})
            return cmd.command_id, False, f"{cmd.name} failed: {exc}", {}
        self.counts["ok." + cmd.name] += 1
        return cmd.command_id, True, "ok", data

    def _verify(self, payload: bytes) -> Command:
        try:
            msg = decode(payload)
        except SchemaError as exc:
            raise CommandError(f"malformed command: {exc}") from None
        if not isinstance(msg, Command):
            raise CommandError(f"expected a command message, got type {msg.type!r}")
        if msg.device_id != self.device_id:
            raise CommandError(f"command for device {msg.device_id!r} sent to {self.device_id!r}")
        if self.public_key is None:
            raise CommandError("no cloud public key configured (device.cloud_public_key): commands refused")
        try:
            verify_message(self.public_key, signed_bytes(msg), bytes.fromhex(msg.sig))
        except (SigningError, ValueError):
            raise CommandError(f"command {msg.command_id!r}: signature invalid (tampered or foreign key)") from None
        last = self._load()
        if msg.counter <= last:
            raise CommandError(f"command {msg.command_id!r}: counter {msg.counter} <= last accepted {last} (replay)")
        if msg.name not in self.handlers:
            raise CommandError(f"unknown command {msg.name!r}: expected one of {sorted(self.handlers)}")
        self._save(msg.counter)
        return msg
