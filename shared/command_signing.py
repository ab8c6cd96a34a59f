"""Signatures of downlink commands: both sides compute the same canonical bytes."""

from __future__ import annotations

import json
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.schemas import Command, canonical, encode
from shared.signing import sign_message


def signed_bytes(cmd: Command) -> bytes:
    """Canonical JSON of every field but ``sig`` (sorted keys, no spaces), as the message carries
    them: a v1 command's bytes have no v2 fields."""
    d = json.loads(encode(cmd))
    d.pop("sig")
    return canonical(d)


def sign_command(priv: Ed25519PrivateKey, cmd: Command) -> Command:
    """Cloud side: the command with its signature filled in."""
    return replace(cmd, sig=sign_message(priv, signed_bytes(cmd)).hex())
