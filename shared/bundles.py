"""Signed model bundles: one model file + detector config + manifest, signed by the cloud.

Format: a ZIP (stored, no compression) with exactly these members, in this order:
``manifest.json`` (canonical JSON), ``manifest.sig`` (64-byte Ed25519 signature of
manifest.json), ``model.tflite`` and ``detector.json``. The manifest carries the sha256 and size
of the two payload files. ``build_bundle`` is deterministic, and ``read_bundle`` rebuilds the
container from what it parsed and requires byte equality, so *any* change to the bundle bytes
(file data, names, timestamps, padding) is rejected, not just changes to the signed parts.

Order of checks in ``read_bundle``: container (``BundleTampered``), signature
(``BundleSignatureError``), payload hashes (``BundleTampered``), device class
(``BundleWrongDeviceClass``), agent version (``BundleIncompatible``), version (``BundleDowngrade``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.signing import (
    PrivateKeyLike,
    PublicKeyLike,
    SignatureInvalid,
    key_id,
    load_private_key,
    sign_message,
    verify_message,
)

log = logging.getLogger(__name__)

FORMAT = 1
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MEMBERS = ("manifest.json", "manifest.sig", "model.tflite", "detector.json")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_REQUIRED = {"format": int, "name": str, "version": int, "sha256": str, "size": int,
             "detector_sha256": str, "created": str, "min_agent_version": str,
             "device_class": str}


class BundleError(ValueError):
    """Base class: a bundle was refused. The message says what was expected and found."""


class BundleSignatureError(BundleError):
    """Unsigned, or signed by a key other than the cloud's."""


class BundleTampered(BundleError):
    """Malformed container, or content that does not match the signed manifest."""


class BundleDowngrade(BundleError):
    """Older than the running model, and no explicit signed rollback to that version."""


class BundleWrongDeviceClass(BundleError):
    """Built for another kind of device."""


class BundleIncompatible(BundleError):
    """Needs a newer agent than this one."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    sha256: str
    size: int
    detector_sha256: str
    created: str
    min_agent_version: str
    device_class: str
    model: dict[str, Any] = field(default_factory=dict)
    key_id: str = ""
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "name": self.name, "version": self.version,
                "sha256": self.sha256, "size": self.size,
                "detector_sha256": self.detector_sha256, "created": self.created,
                "min_agent_version": self.min_agent_version, "device_class": self.device_class,
                "model": self.model, "key_id": self.key_id}

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        for key, typ in _REQUIRED.items():
            if not isinstance(d.get(key), typ) or isinstance(d.get(key), bool):
                raise BundleTampered(f"manifest field {key!r} missing or not {typ.__name__}: "
                                     f"found {d.get(key)!r}")
        if d["format"] != FORMAT:
            raise BundleIncompatible(f"bundle format {d['format']} unknown; this agent reads "
                                     f"format {FORMAT} - update the agent")
        model = d.get("model", {})
        if not isinstance(model, dict):
            raise BundleTampered(f"manifest field 'model' must be an object, found {model!r}")
        return cls(name=d["name"], version=d["version"], sha256=d["sha256"], size=d["size"],
                   detector_sha256=d["detector_sha256"], created=d["created"],
                   min_agent_version=d["min_agent_version"], device_class=d["device_class"],
                   model=model, key_id=str(d.get("key_id", "")), format=d["format"])


@dataclass(frozen=True)
class Bundle:
    manifest: Manifest
    model_bytes: bytes
    detector_config: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes
    detector_bytes: bytes = b""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse_version(v: str) -> tuple[int, ...]:
    """'1.2.10' -> (1, 2, 10); each part counts its leading digits ('0rc1' -> 0)."""
    out = []
    for part in str(v).split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        out.append(int(digits or 0))
    return tuple(out)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _pack(manifest_bytes: bytes, sig: bytes, model: bytes, detector: bytes) -> bytes:
    return _zip(list(zip(MEMBERS, (manifest_bytes, sig, model, detector), strict=True)))


def build_bundle(
    model_bytes: bytes,
    detector_config: dict[str, Any],
    *,
    name: str,
    version: int,
    private_key: PrivateKeyLike,
    device_class: str,
    min_agent_version: str = "0.1.0",
    model_meta: dict[str, Any] | None = None,
    created: str | None = None,
) -> bytes:
    """Sign and pack a bundle; returns the ZIP bytes. Deterministic for a given ``created``."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"version must be a non-negative int, got {version!r}")
    detector = canonical_json(detector_config)
    manifest = Manifest(
        name=name, version=version, sha256=hashlib.sha256(model_bytes).hexdigest(),
        size=len(model_bytes), detector_sha256=hashlib.sha256(detector).hexdigest(),
        created=created or datetime.now(UTC).isoformat(timespec="seconds"),
        min_agent_version=min_agent_version, device_class=device_class,
        model=dict(model_meta or {}), key_id=key_id(load_private_key(private_key)),
    )
    manifest_bytes = manifest.to_json()
    sig = sign_message(private_key, manifest_bytes)
    return _pack(manifest_bytes, sig, model_bytes, detector)


def _unpack(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    if not isinstance(data, bytes | bytearray):
        raise BundleTampered(f"bundle must be bytes, got {type(data).__name__}")
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleTampered(f"bundle is {len(data)} bytes, more than the {MAX_BUNDLE_BYTES} "
                             "allowed; refusing to parse it")
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            names = [i.filename for i in zf.infolist()]
            if sorted(names) == sorted(n for n in MEMBERS if n != "manifest.sig"):
                raise BundleSignatureError(
                    "bundle is unsigned (no manifest.sig); only bundles signed by the cloud key "
                    "are installed"
                )
            if names != list(MEMBERS):
                raise BundleTampered(f"bundle members {names} != expected {list(MEMBERS)}")
            parts = [zf.read(n) for n in MEMBERS]
    except BundleError:
        raise
    except Exception as exc:  # zipfile raises many types on corrupt input
        raise BundleTampered(
            f"bundle is not a readable bundle container ({type(exc).__name__}: {exc}); it was "
            f"truncated or corrupted in transit ({len(data)} bytes) - request it again"
        ) from None
    manifest_bytes, sig, model, detector = parts
    if _pack(manifest_bytes, sig, model, detector) != bytes(data):
        raise BundleTampered("bundle container is not in canonical form (bytes outside the "
                             "signed files were changed) - request it again")
    return manifest_bytes, sig, model, detector


def read_bundle(
    data: bytes,
    public_key: PublicKeyLike,
    *,
    running_version: int,
    device_class: str,
    agent_version: str | None = None,
    allow_rollback_to: int | None = None,
) -> Bundle:
    """Verify a bundle completely and return it, or raise a ``BundleError`` subclass.

    ``allow_rollback_to``: the version named by an explicit, signed rollback command; only then
    may the bundle be older than ``running_version``. Equal versions are accepted (a re-delivery
    of the same release).
    """
    manifest_bytes, sig, model, detector = _unpack(data)
    try:
        verify_message(public_key, manifest_bytes, sig)
    except SignatureInvalid as exc:
        raise BundleSignatureError(
            f"bundle manifest signature invalid: expected a signature by the cloud key "
            f"{key_id(public_key)}; {exc}. Refusing to install; do not trust this bundle"
        ) from None
    try:
        raw = json.loads(manifest_bytes)
    except ValueError as exc:  # signed but unparsable: a cloud bug, still refuse
        raise BundleTampered(f"signed manifest is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BundleTampered("signed manifest is not a JSON object")
    manifest = Manifest.from_dict(raw)
    if hashlib.sha256(model).hexdigest() != manifest.sha256 or len(model) != manifest.size:
        raise BundleTampered(
            f"model.tflite sha256 {hashlib.sha256(model).hexdigest()[:16]}... ({len(model)} B) "
            f"!= signed {manifest.sha256[:16]}... ({manifest.size} B); request the bundle again"
        )
    if hashlib.sha256(detector).hexdigest() != manifest.detector_sha256:
        raise BundleTampered("detector.json does not match the sha256 in the signed manifest")
    try:
        detector_config = json.loads(detector)
    except ValueError as exc:
        raise BundleTampered(f"detector.json is not JSON: {exc}") from None
    if manifest.device_class != device_class:
        raise BundleWrongDeviceClass(
            f"bundle {manifest.name} v{manifest.version} is for device class "
            f"{manifest.device_class!r}, this device is {device_class!r}; release it to the "
            "right cohort"
        )
    if agent_version is not None and (
        parse_version(agent_version) < parse_version(manifest.min_agent_version)
    ):
        raise BundleIncompatible(
            f"bundle {manifest.name} v{manifest.version} needs agent >= "
            f"{manifest.min_agent_version}, this agent is {agent_version}; update the agent first"
        )
    if manifest.version < running_version and allow_rollback_to != manifest.version:
        raise BundleDowngrade(
            f"bundle {manifest.name} v{manifest.version} is older than the running "
            f"v{running_version}; only an explicit signed rollback to v{manifest.version} may "
            f"install it (allow_rollback_to={allow_rollback_to})"
        )
    log.info("bundle %s v%d verified (key %s)", manifest.name, manifest.version,
             key_id(public_key))
    return Bundle(manifest, model, detector_config, manifest_bytes, sig, detector)


def rebuild_with(bundle_bytes: bytes, *, manifest_bytes: bytes | None = None,
                 signature: bytes | None = None, model: bytes | None = None,
                 detector: bytes | None = None) -> bytes:
    """Repack a bundle with some members replaced, in valid container form (for tests/tools).

    Replacing the manifest without re-signing gives a bundle that must fail its signature.
    """
    m, s, mo, d = _unpack(bundle_bytes)
    return _pack(manifest_bytes if manifest_bytes is not None else m,
                 signature if signature is not None else s,
                 model if model is not None else mo, detector if detector is not None else d)
