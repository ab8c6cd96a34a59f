"""Signing and the signed bundle format: every kind of bad bundle is refused with its own error."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.inference.classifier import FACTORY_MODEL
from shared.bundles import (
    MEMBERS,
    BundleDowngrade,
    BundleError,
    BundleIncompatible,
    BundleSignatureError,
    BundleTampered,
    BundleWrongDeviceClass,
    build_bundle,
    parse_version,
    read_bundle,
    rebuild_with,
)
from shared.signing import (
    KeyFormatError,
    SignatureInvalid,
    generate_keypair,
    is_valid,
    key_id,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
    sign_message,
    verify_message,
)

PRIV, PUB = generate_keypair()
FOREIGN_PRIV, FOREIGN_PUB = generate_keypair()
MODEL = FACTORY_MODEL.read_bytes()
DETECTOR = {"z_threshold": 3.5, "persistence_windows": 6}
META = {"classes": ["rest", "walk", "run", "eat", "play"], "rate_hz": 20.0,
        "window_seconds": 4.0, "input": "invariant4"}


def make(version: int = 2, *, priv=PRIV, device_class: str = "collar",  # noqa: ANN001
         min_agent_version: str = "0.1.0", model: bytes = MODEL) -> bytes:
    return build_bundle(model, DETECTOR, name="activity", version=version, private_key=priv,
                        device_class=device_class, min_agent_version=min_agent_version,
                        model_meta=META, created="2026-11-26T00:00:00+00:00")


BUNDLE = make()


def read(data: bytes, **kw) -> object:  # noqa: ANN003
    args = {"running_version": 1, "device_class": "collar", "agent_version": "0.1.0"} | kw
    return read_bundle(data, PUB, **args)


# ---- signing ------------------------------------------------------------------------------------
def test_sign_verify_roundtrip_and_foreign_key() -> None:
    sig = sign_message(PRIV, b"promote activity v2")
    assert len(sig) == 64
    verify_message(PUB, b"promote activity v2", sig)
    assert is_valid(PUB, b"promote activity v2", sig)
    with pytest.raises(SignatureInvalid):
        verify_message(PUB, b"promote activity v3", sig)
    with pytest.raises(SignatureInvalid):
        verify_message(FOREIGN_PUB, b"promote activity v2", sig)
    with pytest.raises(SignatureInvalid, match="64 bytes"):
        verify_message(PUB, b"x", b"short")


@pytest.mark.parametrize("pem", [True, False])
def test_key_files_roundtrip(tmp_path, pem: bool) -> None:  # noqa: ANN001
    priv_path = save_private_key(tmp_path / "cloud.key", PRIV, pem=pem)
    pub_path = save_public_key(tmp_path / "cloud.pub", PUB, pem=pem)
    assert priv_path.stat().st_mode & 0o777 == 0o600
    sig = sign_message(load_private_key(priv_path), b"hello")
    verify_message(load_public_key(pub_path), b"hello", sig)
    verify_message(pub_path.read_bytes(), b"hello", sig)
    assert key_id(PUB) == key_id(PRIV) == key_id(pub_path)


def test_bad_key_bytes() -> None:
    with pytest.raises(KeyFormatError):
        load_public_key(b"not a key at all")
    with pytest.raises(KeyFormatError):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")


# ---- the happy path -----------------------------------------------------------------------------
def test_roundtrip_and_determinism() -> None:
    b = read(BUNDLE)
    assert b.manifest.version == 2 and b.manifest.device_class == "collar"
    assert b.model_bytes == MODEL and b.detector_config == DETECTOR
    assert b.manifest.model == META and b.manifest.key_id == key_id(PUB)
    assert make() == BUNDLE  # deterministic for a fixed 'created'
    with zipfile.ZipFile(io.BytesIO(BUNDLE)) as zf:
        assert [i.filename for i in zf.infolist()] == list(MEMBERS)


def test_same_version_redelivery_accepted() -> None:
    assert read(BUNDLE, running_version=2).manifest.version == 2


# ---- refusals, each with its named error --------------------------------------------------------
def test_unsigned_bundle() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zipfile.ZipFile(io.BytesIO(BUNDLE)) as src:
        for name in MEMBERS:
            if name != "manifest.sig":
                zf.writestr(name, src.read(name))
    with pytest.raises(BundleSignatureError, match="unsigned"):
        read(buf.getvalue())
    with pytest.raises(BundleSignatureError):
        read(rebuild_with(BUNDLE, signature=b""))


def test_foreign_key_signed_bundle() -> None:
    with pytest.raises(BundleSignatureError, match=key_id(PUB)):
        read(make(priv=FOREIGN_PRIV))


def test_downgrade_refused_unless_explicit_rollback() -> None:
    old = make(version=1)
    with pytest.raises(BundleDowngrade, match="older than the running v3"):
        read(old, running_version=3)
    with pytest.raises(BundleDowngrade):
        read(old, running_version=3, allow_rollback_to=2)
    assert read(old, running_version=3, allow_rollback_to=1).manifest.version == 1


def test_wrong_device_class() -> None:
    with pytest.raises(BundleWrongDeviceClass, match="'tracker'.*'collar'"):
        read(make(device_class="tracker"))


def test_needs_newer_agent() -> None:
    with pytest.raises(BundleIncompatible, match="needs agent >= 0.10.0"):
        read(make(min_agent_version="0.10.0"), agent_version="0.9.3")
    assert read(make(min_agent_version="0.10.0"), agent_version="0.10.0")


def test_signed_manifest_with_edits_is_refused() -> None:
    with zipfile.ZipFile(io.BytesIO(BUNDLE)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    for field, value in [("version", 99), ("device_class", "tracker"), ("sha256", "0" * 64),
                         ("min_agent_version", "0.0.1")]:
        edited = dict(manifest, **{field: value})
        data = rebuild_with(BUNDLE, manifest_bytes=json.dumps(edited).encode())
        with pytest.raises(BundleSignatureError):
            read(data)


def test_replaced_model_or_detector_is_tampered() -> None:
    with pytest.raises(BundleTampered, match="sha256"):
        read(rebuild_with(BUNDLE, model=MODEL[:-1] + b"\x00"))
    with pytest.raises(BundleTampered, match="detector"):
        read(rebuild_with(BUNDLE, detector=b'{"z_threshold":99}'))


def test_not_a_bundle() -> None:
    for junk in (b"", b"PK", b"\x00" * 100, b"hello world"):
        with pytest.raises(BundleTampered):
            read(junk)


def test_parse_version() -> None:
    assert parse_version("1.2.10") > parse_version("1.2.9")
    assert parse_version("0.1.0rc1") == (0, 1, 0)


# ---- fuzz: every change is refused --------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bit=st.integers(0, len(BUNDLE) * 8 - 1))
def test_any_single_bit_flip_is_tampered(bit: int) -> None:
    data = bytearray(BUNDLE)
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(BundleTampered):
        read(bytes(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bits=st.lists(st.integers(0, len(BUNDLE) * 8 - 1), min_size=1, max_size=16, unique=True))
def test_any_bit_flips_are_refused(bits: list[int]) -> None:
    data = bytearray(BUNDLE)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((BundleTampered, BundleSignatureError)):
        read(bytes(data))


def _manifest_bytes() -> bytes:
    with zipfile.ZipFile(io.BytesIO(BUNDLE)) as zf:
        return zf.read("manifest.json")


MANIFEST = _manifest_bytes()


@settings(max_examples=200, deadline=None)
@given(bits=st.lists(st.integers(0, len(MANIFEST) * 8 - 1), min_size=1, max_size=8, unique=True))
def test_manifest_bit_flips_fail_the_signature(bits: list[int]) -> None:
    m = bytearray(MANIFEST)
    for bit in bits:
        m[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(BundleSignatureError):
        read(rebuild_with(BUNDLE, manifest_bytes=bytes(m)))


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(0, len(BUNDLE) - 1))
def test_truncated_download_is_tampered(cut: int) -> None:
    with pytest.raises(BundleTampered):
        read(BUNDLE[:cut])


def test_all_errors_are_bundle_errors() -> None:
    for cls in (BundleSignatureError, BundleTampered, BundleDowngrade, BundleWrongDeviceClass,
                BundleIncompatible):
        assert issubclass(cls, BundleError)


def test_ensure_keypair_generates_once(tmp_path) -> None:  # noqa: ANN001
    from shared.signing import ensure_keypair

    priv, pub = ensure_keypair(tmp_path)
    again, _ = ensure_keypair(tmp_path)
    assert key_id(again) == key_id(pub)
    assert (tmp_path / "cloud.key").stat().st_mode & 0o777 == 0o600
    verify_message(tmp_path / "cloud.pub", b"x", sign_message(priv, b"x"))
