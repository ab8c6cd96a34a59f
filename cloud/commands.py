"""Signed downlink commands: one counter per device (persisted), ed25519 signature, QoS 1."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.db import CloudStore
from cloud.store.schema import ensure_set
from shared import schemas, topics
from shared.command_signing import sign_command

logger = logging.getLogger(__name__)
migrations = Migrations("edgeloop.cloud.commands")


@migrations()
def m001_commands(db: Database) -> None:
    db.table("command_counters").create({"device_id": str, "counter": int}, pk="device_id")
    db.table("commands").create({"command_id": str, "device_id": str, "name": str, "counter": int, "args": str,
                           "sent_at": float, "reason": str}, pk="command_id")


class Commander:
    """Signs and publishes commands; every command sent is stored with its reason."""

    def __init__(self, store: CloudStore, key: Ed25519PrivateKey, publish: Callable[[str, bytes], None],
                 clock: Callable[[], float]) -> None:
        self.store, self.key, self.publish, self.clock = store, key, publish, clock
        ensure_set(store.db, migrations)

    def send(self, device_id: str, name: str, args: dict[str, Any], reason: str = "",
             command_id: str = "") -> schemas.Command:
        import json

        with self.store.db.atomic():
            row = self.store.db.execute("SELECT counter FROM command_counters WHERE device_id = ?",
                                        [device_id]).fetchone()
            counter = (row[0] if row else 0) + 1
            self.store.db.execute("INSERT OR REPLACE INTO command_counters VALUES (?, ?)", [device_id, counter])
            cmd = sign_command(self.key, schemas.Command(device_id, command_id or f"c-{uuid.uuid4().hex[:12]}",
                                                         name, counter, args))
            self.store.db.table("commands").upsert({"command_id": cmd.command_id, "device_id": device_id,
                                              "name": name, "counter": counter,
                                              "args": json.dumps(args)[:2000], "sent_at": self.clock(),
                                              "reason": reason}, pk="command_id")
        self.publish(topics.commands(device_id), schemas.encode(cmd))
        logger.info("cloud.command_sent", extra={"device_id": device_id, "command": name})
        return cmd
