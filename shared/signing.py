"""Ed25519 signing for model bundles and device commands.

The cloud generates its key pair at run time and keeps the private key; devices hold only the
public key. Keys may be given as key objects, raw 32-byte strings, PEM bytes or file paths
(``.pem``/``.key``/``.pub`` files holding PEM or raw bytes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

SIGNATURE_LEN = 64
KEY_LEN = 32

PrivateKeyLike = Ed25519PrivateKey | bytes | str | Path
PublicKeyLike = Ed25519PublicKey | bytes | str | Path


class SigningError(ValueError):
    """Base class of signing errors."""


class SignatureInvalid(SigningError):
    """A signature does not verify with the given public key."""


class KeyFormatError(SigningError):
    """Key bytes or a key file are not an Ed25519 key in raw or PEM form."""


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    priv = Ed25519PrivateKey.generate()
    return priv, priv.public_key()


def _read(source: bytes | str | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def load_private_key(source: PrivateKeyLike) -> Ed25519PrivateKey:
    """An Ed25519 private key from a key object, raw 32 bytes, PEM bytes or a file path."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    data = _read(source)
    if len(data) == KEY_LEN:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an Ed25519 private key (raw 32 bytes or PEM): {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(source: PublicKeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object, raw 32 bytes, PEM bytes or a file path."""
    if isinstance(source, Ed25519PublicKey):
        return source
    data = _read(source)
    if len(data) == KEY_LEN:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an Ed25519 public key (raw 32 bytes or PEM): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def private_key_bytes(key: PrivateKeyLike, *, pem: bool = True) -> bytes:
    k = load_private_key(key)
    if pem:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    return k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())


def public_key_bytes(key: PublicKeyLike, *, pem: bool = True) -> bytes:
    k = load_public_key(key)
    if pem:
        return k.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: PublicKeyLike | Ed25519PrivateKey) -> str:
    """Short fingerprint of a public key (first 16 hex of sha256 of its raw bytes), for logs."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else load_public_key(key)
    return hashlib.sha256(public_key_bytes(pub, pem=False)).hexdigest()[:16]


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_private_key(path: str | Path, key: PrivateKeyLike, *, pem: bool = True) -> Path:
    """Write the private key (mode 0600, atomically)."""
    p = Path(path)
    _write_atomic(p, private_key_bytes(key, pem=pem), 0o600)
    return p


def save_public_key(path: str | Path, key: PublicKeyLike, *, pem: bool = True) -> Path:
    p = Path(path)
    _write_atomic(p, public_key_bytes(key, pem=pem), 0o644)
    return p


def sign_message(priv: PrivateKeyLike, payload: bytes) -> bytes:
    """A 64-byte Ed25519 signature of ``payload``."""
    return load_private_key(priv).sign(payload)


def verify_message(pub: PublicKeyLike, payload: bytes, sig: bytes) -> None:
    """Return if ``sig`` is a valid signature of ``payload`` by ``pub``; else raise SignatureInvalid."""
    key = load_public_key(pub)
    if not isinstance(sig, bytes | bytearray) or len(sig) != SIGNATURE_LEN:
        raise SignatureInvalid(
            f"signature must be {SIGNATURE_LEN} bytes, got "
            f"{len(sig) if isinstance(sig, bytes | bytearray) else type(sig).__name__}"
        )
    try:
        key.verify(bytes(sig), payload)
    except InvalidSignature:
        raise SignatureInvalid(
            f"signature does not verify with public key {key_id(key)}: the payload was altered "
            "or signed by another key"
        ) from None


def is_valid(pub: PublicKeyLike, payload: bytes, sig: bytes) -> bool:
    """Boolean form of ``verify_message``."""
    try:
        verify_message(pub, payload, sig)
    except SignatureInvalid:
        return False
    return True


def ensure_keypair(directory: str | Path, name: str = "cloud"
                   ) -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """Load ``<name>.key``/``<name>.pub`` (PEM) from ``directory``, or generate and save them.

    The cloud calls this at start; devices get only the ``.pub`` file.
    """
    d = Path(directory)
    priv_path, pub_path = d / f"{name}.key", d / f"{name}.pub"
    if priv_path.exists():
        priv = load_private_key(priv_path)
        if not pub_path.exists():
            save_public_key(pub_path, priv.public_key())
        return priv, priv.public_key()
    priv, pub = generate_keypair()
    save_private_key(priv_path, priv)
    save_public_key(pub_path, pub)
    log.info("generated signing key pair %s in %s", key_id(pub), d)
    return priv, pub
