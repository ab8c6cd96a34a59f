"""MQTT message schemas (JSON, UTF-8), each with a version field ``v``.

``decode(payload)`` validates strictly and raises SchemaError naming the field, what was expected,
what was found and what to do; ``encode(message)`` is its inverse (``decode(encode(m)) == m``).
``decode_batch(payload)`` checks an uplink batch record by record: a bad record is refused alone
(with its reason), the others are kept. Layouts are documented in docs/protocol.md.

Versions: ``batch`` and ``ack`` are v2 (the record identity ``(device_id, incarnation, seq)`` and
per-record refusals); v1 of both still decodes (``incarnation`` "" and no refusals), so devices
that predate v2 keep working. ``command`` is v2 (expiry, epoch, incarnation) and ``status`` v2 (the
incarnation); v1 of both still decodes. ``reply`` and ``feedback`` are v1.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from shared.codec import SchemaError, from_json, to_json
from shared.records import Record, RecordKind
from shared.topics import check_id

__all__ = ["COMMAND_VERSION", "FEEDBACK_ACTIONS", "MAX_MESSAGE_BYTES", "RECORD_KINDS", "SCHEMA_VERSION", "STATES", "UPLINK_VERSION",
           "Ack", "BatchDecode", "Command", "Feedback", "Message", "Record", "Rejection", "Reply", "SchemaError",
           "Status", "UplinkBatch", "canonical", "check_incarnation", "decode", "decode_batch", "encode"]

SCHEMA_VERSION = 1  # reply, feedback (and the owner-facing alert)
UPLINK_VERSION = 2  # batch and ack; see VERSIONS
COMMAND_VERSION = 2  # command: expiry, epoch and incarnation (replay protection)
MAX_MESSAGE_BYTES = 256 * 1024
MAX_DEPTH = 64  # JSON nesting accepted by decode (deeper bodies could not be re-encoded)
MAX_REASON_CHARS = 300  # a refusal's reason as carried in an ack
DeviceState = Literal["online", "offline", "stopped"]
FeedbackAction = Literal["confirm", "dismiss", "normal_for_her", "label", "delivered", "opened", "acted", "ignored"]
RECORD_KINDS: tuple[str, ...] = tuple(k.value for k in RecordKind)
STATES: tuple[str, ...] = get_args(DeviceState)
FEEDBACK_ACTIONS: tuple[str, ...] = get_args(FeedbackAction)
_INCARNATION = re.compile(r"[0-9a-f]{32}")


def check_incarnation(value: str) -> str:
    """An incarnation is 32 lowercase hex characters (``uuid4().hex``), or "" for a device whose
    outbox predates v2 (its records keep the identity v1 gave them)."""
    if value and not _INCARNATION.fullmatch(value):
        raise SchemaError(f"incarnation {value!r:.60} is invalid: expected 32 lowercase hex characters "
                          "(uuid4().hex), made once with the device's outbox")
    return value


def _check_seq(seq: int, name: str = "seq") -> None:
    if not 1 <= seq < 2**63:
        raise SchemaError(f"{name}: must be 1 .. 2^63-1, found {seq}")


@dataclass(frozen=True)
class UplinkBatch:
    """Device -> cloud: outbox records of one incarnation of one device's outbox."""

    type: ClassVar[str] = "batch"
    versions: ClassVar[tuple[int, ...]] = (1, 2)
    since: ClassVar[dict[str, int]] = {"incarnation": 2}
    device_id: str
    records: tuple[Record, ...]
    incarnation: str = ""
    v: int = UPLINK_VERSION

    def validate(self) -> None:
        check_id(self.device_id)
        check_incarnation(self.incarnation)


@dataclass(frozen=True)
class Rejection:
    """A record the cloud refuses for good (schema, validation, binding): the device moves it
    aside and never sends it again."""

    seq: int
    reason: str

    def validate(self) -> None:
        _check_seq(self.seq)


@dataclass(frozen=True)
class Ack:
    """Cloud -> device: ``seqs`` are stored durably (or were already): the device may forget
    them; ``rejected`` are refused for good. Both for the batch's ``incarnation`` only."""

    type: ClassVar[str] = "ack"
    versions: ClassVar[tuple[int, ...]] = (1, 2)
    since: ClassVar[dict[str, int]] = {"incarnation": 2, "rejected": 2}
    device_id: str
    seqs: tuple[int, ...]
    incarnation: str = ""
    rejected: tuple[Rejection, ...] = ()
    v: int = UPLINK_VERSION

    def validate(self) -> None:
        check_id(self.device_id)
        check_incarnation(self.incarnation)
        if not all(1 <= s < 2**63 for s in self.seqs):
            raise SchemaError("seqs: each must be 1 .. 2^63-1")


@dataclass(frozen=True)
class Status:
    """Device -> cloud (retained): online, offline (the will) or stopped. v2 names the outbox's
    ``incarnation``, so the cloud can bind its commands to it before the first batch."""

    type: ClassVar[str] = "status"
    versions: ClassVar[tuple[int, ...]] = (1, 2)
    since: ClassVar[dict[str, int]] = {"incarnation": 2}
    device_id: str
    state: DeviceState
    ts: float
    incarnation: str = ""
    v: int = 2

    def validate(self) -> None:
        check_id(self.device_id)
        check_incarnation(self.incarnation)


@dataclass(frozen=True)
class Command:
    """Cloud -> device; ``sig`` is the hex ed25519 signature over the canonical JSON of all other
    fields. Replay protection (v2): the device refuses a command after ``expires_at`` (on its
    timeline), one for another ``incarnation`` of its outbox (its state was reset), and one whose
    ``(epoch, counter)`` is not above the last it accepted; ``epoch`` grows when the cloud re-syncs
    a device whose counter it lost (a database restored from a backup). A v1 command (counter
    only) still decodes, and is refused by a v2 device."""

    type: ClassVar[str] = "command"
    versions: ClassVar[tuple[int, ...]] = (1, 2)
    since: ClassVar[dict[str, int]] = {"expires_at": 2, "epoch": 2, "incarnation": 2}
    device_id: str
    command_id: str
    name: str
    counter: int
    args: dict[str, Any] = field(default_factory=dict)
    sig: str = ""
    expires_at: float = 0.0
    epoch: int = 0
    incarnation: str = ""
    v: int = COMMAND_VERSION

    def validate(self) -> None:
        check_id(self.device_id)
        check_incarnation(self.incarnation)
        for name in ("counter", "epoch"):
            if not 0 <= getattr(self, name) < 2**63:
                raise SchemaError(f"{name}: must be 0 .. 2^63-1, found {getattr(self, name)}")
        if self.expires_at < 0:
            raise SchemaError(f"expires_at: must be epoch seconds >= 0, found {self.expires_at}")


@dataclass(frozen=True)
class Reply:
    type: ClassVar[str] = "reply"
    device_id: str
    command_id: str
    ok: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    v: int = SCHEMA_VERSION

    def validate(self) -> None:
        check_id(self.device_id)


@dataclass(frozen=True)
class Feedback:
    type: ClassVar[str] = "feedback"
    alert_id: str
    individual_id: str
    action: FeedbackAction
    ts: float
    label: str = ""
    v: int = SCHEMA_VERSION

    def validate(self) -> None:
        check_id(self.individual_id, "individual id")


Message = UplinkBatch | Ack | Status | Command | Reply | Feedback
_TYPES: dict[str, Any] = {c.type: c for c in (UplinkBatch, Ack, Status, Command, Reply, Feedback)}
VERSIONS: dict[str, tuple[int, ...]] = {t: getattr(c, "versions", (1,)) for t, c in _TYPES.items()}


@dataclass(frozen=True)
class BatchDecode:
    """``decode_batch``'s result: the batch with its good records only, the records refused (by
    sequence number, with the reason) and the reasons of records too broken to name a seq."""

    batch: UplinkBatch
    rejected: tuple[Rejection, ...] = ()
    unidentified: tuple[str, ...] = ()


def encode(msg: Message) -> bytes:
    """Serialise a message to compact JSON bytes (fields newer than ``msg.v`` are left out)."""
    d = to_json(msg)
    for name, since in getattr(msg, "since", {}).items():
        if msg.v < since:
            if d[name]:
                raise SchemaError(f"{msg.type}.{name} needs v>={since}; this message is v={msg.v}")
            del d[name]
    d["type"] = msg.type
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


def canonical(d: dict[str, Any]) -> bytes:
    """Canonical JSON used for signatures."""
    return json.dumps(d, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def decode(payload: bytes) -> Message:
    """Parse and validate a message. Raises SchemaError with a one-line reason."""
    d, cls = _envelope(payload)
    msg: Message = from_json(cls, _without_type(d), cls.type)
    return msg


def decode_batch(payload: bytes) -> BatchDecode:
    """Decode an uplink batch record by record. The envelope (type, version, device id,
    incarnation) must be valid, else SchemaError; a bad record is refused alone, with its reason."""
    d, cls = _envelope(payload)
    if cls is not UplinkBatch:
        raise SchemaError(f"expected a batch, found a {cls.type!r} message")
    raw = d.get("records")
    if not isinstance(raw, list):
        raise SchemaError(f"batch.records: expected a list of records, found {type(raw).__name__}")
    env: UplinkBatch = from_json(UplinkBatch, {**_without_type(d), "records": []}, "batch")
    good: list[Record] = []
    rejected: list[Rejection] = []
    unidentified: list[str] = []
    for i, r in enumerate(raw):
        try:
            good.append(from_json(Record, r, f"batch.records[{i}]"))
        except SchemaError as exc:
            seq = r.get("seq") if isinstance(r, dict) else None
            if type(seq) is int and 1 <= seq < 2**63:
                rejected.append(Rejection(seq, str(exc)[:MAX_REASON_CHARS]))
            else:
                unidentified.append(str(exc)[:MAX_REASON_CHARS])
    batch = UplinkBatch(env.device_id, tuple(good), env.incarnation, env.v)
    return BatchDecode(batch, tuple(rejected), tuple(unidentified))


def _without_type(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "type"}


def _envelope(payload: bytes) -> tuple[dict[str, Any], Any]:
    """Parse the JSON object and check its type and version; returns (dict, message class)."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"message is {len(payload)} bytes, max {MAX_MESSAGE_BYTES}: send smaller batches")
    try:
        d = json.loads(payload, parse_constant=_no_nan, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"payload is not UTF-8 JSON ({exc}): publish JSON made by shared.schemas.encode") from None
    except RecursionError:
        raise SchemaError("payload JSON is nested too deeply: publish JSON made by shared.schemas.encode") from None
    if not isinstance(d, dict):
        raise SchemaError(f"payload must be a JSON object, found {type(d).__name__}")
    if _too_deep(d, MAX_DEPTH):
        raise SchemaError(f"payload JSON is nested deeper than {MAX_DEPTH} levels: flatten the body")
    v = d.get("v")
    if type(v) is not int or v not in range(1, UPLINK_VERSION + 1):
        raise SchemaError(f"schema version v={v!r} is not supported (this side speaks v=1..{UPLINK_VERSION}): "
                          "upgrade the older side")
    t = d.get("type")
    cls = _TYPES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise SchemaError(f"type {d.get('type')!r} is unknown: expected one of {sorted(_TYPES)}")
    if v not in VERSIONS[cls.type]:
        raise SchemaError(f"schema version v={v} is not supported for a {cls.type!r} (this side reads "
                          f"v={', '.join(map(str, VERSIONS[cls.type]))}): upgrade the older side")
    newer = sorted(k for k, since in getattr(cls, "since", {}).items() if k in d and since > v)
    if newer:
        raise SchemaError(f"{cls.type}: field(s) {newer} need a newer version than v={v}")
    return d, cls


def _too_deep(obj: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit`` (iterative: no recursion of our own)."""
    stack = [(obj, 1)]
    while stack:
        x, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(x, dict):
            stack.extend((v, depth + 1) for v in x.values() if isinstance(v, dict | list))
        elif isinstance(x, list):
            stack.extend((v, depth + 1) for v in x if isinstance(v, dict | list))
    return False


def _no_nan(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):  # 1e999: JSON allows it, but it could never be sent on
        raise ValueError(f"number {text[:40]} is out of range")
    return x
