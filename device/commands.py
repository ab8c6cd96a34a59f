"""Downlink commands: verify signature, binding and freshness, then dispatch to plain handlers.

Commands are ``shared.schemas.Command`` messages signed by the cloud's ed25519 key over the
canonical JSON of every field but ``sig``. Replay protection does not rest on one counter:

* ``incarnation``: a command is for one life of the device's outbox; after a state wipe (a new
  incarnation, its counter back to zero) the commands captured before it are refused;
* ``expires_at``: a command is refused after it, on the agent's timeline (``now``);
* ``(epoch, counter)`` must be above the last pair accepted (kept in the outbox's state). A fresh,
  well-signed command for this incarnation that is not above it is refused *and* answered with a
  re-sync request carrying the device's pair: if the cloud lost its counter (a database restored
  from a backup) it answers with a signed ``resync`` in a new epoch and its next commands pass; if
  it did not (the command was a replay), the cloud sees it is ahead and does nothing.

:func:`verify_command` is the pure check; :class:`CommandHandler` keeps the state, counts every
refusal and answers; nothing here raises to the caller.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.errors import CommandError, SetupError
from shared.command_signing import signed_bytes
from shared.schemas import COMMAND_VERSION, Command, SchemaError, decode
from shared.signing import SigningError, load_public_key, verify_message

logger = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], dict[str, Any]]
RESYNC = "resync"  # the cloud's answer to a re-sync request: accepted for its new epoch, nothing else


@dataclass(frozen=True, order=True)
class Position:
    """The last ``(epoch, counter)`` a device accepted; a command must be above it."""

    epoch: int = 0
    counter: int = 0


class CommandRefused(CommandError):
    """A command the device will not run. ``resync``: it was well signed, fresh and for this
    incarnation, only not above the last position: the cloud may have lost its counter."""

    def __init__(self, reason: str, command_id: str = "", *, resync: bool = False) -> None:
        super().__init__(reason)
        self.command_id = command_id
        self.resync = resync


def verify_command(payload: bytes, *, device_id: str, public_key: Ed25519PublicKey | None, incarnation: str,
                   now: float, last: Position) -> Command:
    """The command in ``payload`` if this device (``device_id``, outbox ``incarnation``, last
    accepted ``last``) may run it at ``now``; else :class:`CommandRefused` saying why. Pure."""
    try:
        msg = decode(payload)
    except SchemaError as exc:
        raise CommandRefused(f"malformed command: {exc}") from None
    if not isinstance(msg, Command):
        raise CommandRefused(f"expected a command message, got type {msg.type!r}")
    cid = msg.command_id
    if msg.device_id != device_id:
        raise CommandRefused(f"command for device {msg.device_id!r} sent to {device_id!r}")
    if public_key is None:
        raise CommandRefused("no cloud public key configured (device.cloud_public_key): commands refused")
    try:
        verify_message(public_key, signed_bytes(msg), bytes.fromhex(msg.sig))
    except (SigningError, ValueError):
        raise CommandRefused(f"command {cid!r}: signature invalid (tampered or foreign key)") from None
    if msg.v < COMMAND_VERSION:
        raise CommandRefused(f"command {cid!r} is v{msg.v}: without expiry and incarnation it could be a "
                             "replay; upgrade the cloud (commands v2)")
    if msg.incarnation != incarnation:
        raise CommandRefused(f"command {cid!r} is for incarnation {msg.incarnation[:8] or '(none)'}, this "
                             f"device is {incarnation[:8]}: sent before its state was reset (or a replay)")
    if now > msg.expires_at:
        raise CommandRefused(f"command {cid!r} expired at {msg.expires_at:.0f} (now {now:.0f}): replay or "
                             "delivered too late")
    pos = Position(msg.epoch, msg.counter)
    if pos <= last:
        older = "an older epoch" if msg.epoch < last.epoch else "a counter not above the last"
        raise CommandRefused(f"command {cid!r}: epoch {msg.epoch} counter {msg.counter} is {older} accepted "
                             f"(epoch {last.epoch} counter {last.counter}): replay, or the cloud lost its "
                             "counter (re-sync asked)", cid, resync=True)
    return msg


class CommandHandler:
    """Device side. ``handle(payload)`` returns (command_id, ok, detail, data) and never raises.

    ``load``/``save`` keep the last accepted :class:`Position` (the outbox's state);
    ``incarnation`` is the outbox's; ``now`` is the agent's timeline."""

    def __init__(self, device_id: str, public_key: Ed25519PublicKey | None, load: Callable[[], Position],
                 save: Callable[[Position], None], *, incarnation: str, now: Callable[[], float]) -> None:
        self.device_id = device_id
        self.public_key = public_key
        self.incarnation = incarnation
        self._load, self._save, self._now = load, save, now
        self.handlers: dict[str, Handler] = {RESYNC: lambda _args: {}}
        self.counts: Counter[str] = Counter()

    def register(self, name: str, fn: Handler) -> None:
        self.handlers[name] = fn

    def handle(self, payload: bytes) -> tuple[str, bool, str, dict[str, Any]]:
        last = self._load()
        try:
            cmd = verify_command(payload, device_id=self.device_id, public_key=self.public_key,
                                 incarnation=self.incarnation, now=self._now(), last=last)
            if cmd.name not in self.handlers:
                raise CommandRefused(f"unknown command {cmd.name!r}: expected one of {sorted(self.handlers)}")
        except CommandRefused as exc:
            self.counts["rejected"] += 1
            logger.warning("commands.rejected", extra={"reason": str(exc)})
            if not exc.resync:
                return "", False, str(exc), {}
            # not the refused command's id: nothing waiting for that command counts it as failed
            self.counts["resync_asked"] += 1
            return "", False, str(exc), {"resync": {"epoch": last.epoch, "counter": last.counter},
                                         "refused": exc.command_id}
        try:
            self._save(Position(cmd.epoch, cmd.counter))
        except CommandError as exc:  # not kept (disk full): running it would let it be replayed
            self.counts["rejected"] += 1
            logger.warning("commands.rejected", extra={"reason": str(exc)})
            return cmd.command_id, False, str(exc), {}
        if cmd.name == RESYNC:
            self.counts["resynced"] += 1
            logger.warning("commands.resynced", extra={"epoch": cmd.epoch, "counter": cmd.counter,
                                                       "was": f"{last.epoch}/{last.counter}"})
            return cmd.command_id, True, "ok", {"epoch": cmd.epoch}
        try:
            data = self.handlers[cmd.name](cmd.args)
        except Exception as exc:  # a handler failure is reported, never crashes the agent
            self.counts["failed"] += 1
            logger.warning("commands.failed", extra={"command": cmd.name, "reason": str(exc)})
            return cmd.command_id, False, f"{cmd.name} failed: {exc}", {}
        self.counts["ok." + cmd.name] += 1
        return cmd.command_id, True, "ok", data


def load_cloud_public_key(path: str) -> Ed25519PublicKey | None:
    """The cloud's public key (commands, bundles), or a :class:`SetupError` naming the file."""
    if not path:
        return None
    try:
        return load_public_key(Path(path))
    except OSError as exc:
        raise SetupError(f"cloud_public_key: cannot read {path} ({exc.strerror}): pass the cloud.pub written "
                         "by `edgeloop cloud --keygen DIR`") from None
    except SigningError as exc:
        raise SetupError(f"cloud_public_key: {path}: {exc}: pass the cloud.pub written by "
                         "`edgeloop cloud --keygen DIR`") from None
