"""Verify and atomically install signed model bundles on the device.

A bundle is fully verified in memory (``shared.bundles.read_bundle``) before anything touches
the disk. Installing writes every file into a temporary directory next to the final one, fsyncs
files and directory, then renames the directory into place (``os.replace``) and fsyncs the
parent: a crash or a truncated download never leaves a half-written model where one is loaded.
Installed slots are re-verified (signature and sha256) every time they are loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared.bundles import (
    Bundle,
    BundleSignatureError,
    BundleTampered,
    Manifest,
    read_bundle,
)
from shared.signing import PublicKeyLike, SignatureInvalid, verify_message

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
DETECTOR_FILE = "detector.json"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"

__all__ = ["atomic_write_bytes", "atomic_write_json", "fsync_dir", "install_bundle",
           "load_installed", "read_bundle", "slot_name"]


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_fsync(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, ``os.replace``, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _write_fsync(Path(tmp), data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")


def slot_name(manifest: Manifest) -> str:
    """Directory name of an installed bundle: name, version and a sha256 prefix."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in manifest.name)[:40]
    return f"{safe}-v{manifest.version}-{manifest.sha256[:12]}"


def install_bundle(bundle: Bundle, slots_dir: Path) -> Path:
    """Write a verified bundle to ``slots_dir/<slot_name>`` atomically; return that directory.

    Idempotent: an existing, intact directory for the same bundle is reused.
    """
    slots_dir.mkdir(parents=True, exist_ok=True)
    final = slots_dir / slot_name(bundle.manifest)
    if final.exists():
        try:
            load_installed(final, None)
            return final
        except (BundleTampered, BundleSignatureError, OSError):
            log.warning("replacing damaged installed bundle %s", final)
            shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(dir=slots_dir, prefix=".install-"))
    try:
        _write_fsync(tmp / MODEL_FILE, bundle.model_bytes)
        _write_fsync(tmp / DETECTOR_FILE, bundle.detector_bytes)
        _write_fsync(tmp / MANIFEST_FILE, bundle.manifest_bytes)
        _write_fsync(tmp / SIGNATURE_FILE, bundle.signature)
        fsync_dir(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(slots_dir)
    log.info("installed %s", final.name)
    return final


def load_installed(slot_dir: Path, public_key: PublicKeyLike | None) -> Manifest:
    """Re-verify an installed slot: signature (if a key is given) and file hashes."""
    manifest_bytes = (slot_dir / MANIFEST_FILE).read_bytes()
    if public_key is not None:
        try:
            verify_message(public_key, manifest_bytes, (slot_dir / SIGNATURE_FILE).read_bytes())
        except SignatureInvalid as exc:
            raise BundleSignatureError(f"installed slot {slot_dir.name}: {exc}") from None
    try:
        manifest = Manifest.from_dict(json.loads(manifest_bytes))
    except ValueError as exc:
        raise BundleTampered(f"installed slot {slot_dir.name}: bad manifest: {exc}") from None
    model = (slot_dir / MODEL_FILE).read_bytes()
    if hashlib.sha256(model).hexdigest() != manifest.sha256:
        raise BundleTampered(f"installed slot {slot_dir.name}: model.tflite no longer matches its "
                             "signed sha256 (disk corruption?) - reinstall the bundle")
    detector = (slot_dir / DETECTOR_FILE).read_bytes()
    if hashlib.sha256(detector).hexdigest() != manifest.detector_sha256:
        raise BundleTampered(f"installed slot {slot_dir.name}: detector.json changed on disk")
    return manifest
