"""MQTT message schemas (JSON, UTF-8), each with a version field ``v``.

``decode(payload)`` validates strictly and raises SchemaError naming the field, what was expected,
what was found and what to do; ``encode(message)`` is its inverse (``decode(encode(m)) == m``).
Layouts are documented in docs/protocol.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

from shared.topics import TopicError, check_id

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
MAX_DEPTH = 64  # JSON nesting accepted by decode (deeper bodies could not be re-encoded)
RECORD_KINDS = ("event", "summary", "raw", "report")
STATES = ("online", "offline", "stopped")
FEEDBACK_ACTIONS = ("confirm", "dismiss", "normal_for_her", "label", "delivered", "opened",
                    "acted", "ignored")


class SchemaError(ValueError):
    """A message does not match its schema."""


@dataclass(frozen=True)
class Record:
    """One outbox row as sent upstream; (device_id, seq) is its idempotency key."""

    seq: int
    kind: str
    ts: float
    individual_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class UplinkBatch:
    type: ClassVar[str] = "batch"
    device_id: str
    records: tuple[Record, ...]
    v: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Ack:
    """Cloud -> device: these sequence numbers are stored durably; the device may forget them."""

    type: ClassVar[str] = "ack"
    device_id: str
    seqs: tuple[int, ...]
    v: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Status:
    type: ClassVar[str] = "status"
    device_id: str
    state: str
    ts: float
    v: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Command:
    """Cloud -> device. ``counter`` strictly increases per device (replay protection);
    ``sig`` is the hex ed25519 signature over the canonical JSON of all other fields."""

    type: ClassVar[str] = "command"
    device_id: str
    command_id: str
    name: str
    counter: int
    args: dict[str, Any] = field(default_factory=dict)
    sig: str = ""
    v: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Reply:
    type: ClassVar[str] = "reply"
    device_id: str
    command_id: str
    ok: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    v: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Feedback:
    type: ClassVar[str] = "feedback"
    alert_id: str
    individual_id: str
    action: str
    ts: float
    label: str = ""
    v: int = SCHEMA_VERSION


Message = UplinkBatch | Ack | Status | Command | Reply | Feedback
_TYPES: dict[str, type] = {c.type: c for c in (UplinkBatch, Ack, Status, Command, Reply, Feedback)}


def encode(msg: Message) -> bytes:
    """Serialise a message to compact JSON bytes."""
    d = asdict(msg)
    d["type"] = msg.type
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


def canonical(d: dict[str, Any]) -> bytes:
    """Canonical JSON used for signatures."""
    return json.dumps(d, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def decode(payload: bytes) -> Message:
    """Parse and validate a message. Raises SchemaError with a one-line reason."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"message is {len(payload)} bytes, max {MAX_MESSAGE_BYTES}: send smaller batches")
    try:
        d = json.loads(payload, parse_constant=_no_nan)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"payload is not UTF-8 JSON ({exc}): publish JSON made by shared.schemas.encode") from None
    except RecursionError:
        raise SchemaError("payload JSON is nested too deeply: publish JSON made by shared.schemas.encode") from None
    if not isinstance(d, dict):
        raise SchemaError(f"payload must be a JSON object, found {type(d).__name__}")
    if _too_deep(d, MAX_DEPTH):
        raise SchemaError(f"payload JSON is nested deeper than {MAX_DEPTH} levels: flatten the body")
    v = d.get("v")
    if v != SCHEMA_VERSION:
        raise SchemaError(f"schema version v={v!r} is not supported (this side speaks v={SCHEMA_VERSION}): "
                          "upgrade the older side")
    t = d.get("type")
    cls = _TYPES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise SchemaError(f"type {d.get('type')!r} is unknown: expected one of {sorted(_TYPES)}")
    return _build(cls, d, cls.type)


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


_SIMPLE = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict[str, Any]": dict}


def _build(cls: type, d: dict[str, Any], path: str) -> Any:
    names = {f.name for f in fields(cls)}
    extra = set(d) - names - {"type"}
    if extra:
        raise SchemaError(f"{path}: unknown field(s) {sorted(extra)}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in d:
            if f.default is not MISSING or f.default_factory is not MISSING:
                continue
            raise SchemaError(f"{path}.{f.name}: missing required field")
        kwargs[f.name] = _value(str(f.type), d[f.name], f"{path}.{f.name}")
    obj = cls(**kwargs)
    _semantic(obj, path)
    return obj


def _value(tname: str, x: Any, path: str) -> Any:
    if tname == "tuple[Record, ...]":
        if not isinstance(x, list):
            raise SchemaError(f"{path}: expected a list of records, found {type(x).__name__}")
        return tuple(_build(Record, r if isinstance(r, dict) else _bad(path, "object", r), path + "[]")
                     for r in x)
    if tname == "tuple[int, ...]":
        if not isinstance(x, list) or not all(type(i) is int for i in x):
            raise SchemaError(f"{path}: expected a list of integers, found {x!r:.60}")
        return tuple(x)
    want = _SIMPLE[tname]
    if isinstance(x, bool) and tname in ("int", "float"):
        _bad(path, tname, x)
    if not isinstance(x, want):
        _bad(path, tname, x)
    if tname == "float":
        x = float(x)
        if not math.isfinite(x):
            _bad(path, "finite number", x)
    return x


def _bad(path: str, want: str, x: Any) -> Any:
    raise SchemaError(f"{path}: expected {want}, found {type(x).__name__} {x!r:.60}")


def _semantic(obj: Any, path: str) -> None:
    try:
        if isinstance(obj, Record):
            check_id(obj.individual_id, "individual id")
            if obj.seq < 1 or obj.seq >= 2**63:
                raise SchemaError(f"{path}.seq: must be 1 .. 2^63-1, found {obj.seq}")
            if obj.kind not in RECORD_KINDS:
                raise SchemaError(f"{path}.kind: expected one of {RECORD_KINDS}, found {obj.kind!r}")
        if hasattr(obj, "device_id"):
            check_id(obj.device_id)
        if isinstance(obj, Status) and obj.state not in STATES:
            raise SchemaError(f"{path}.state: expected one of {STATES}, found {obj.state!r}")
        if isinstance(obj, Feedback):
            check_id(obj.individual_id, "individual id")
            if obj.action not in FEEDBACK_ACTIONS:
                raise SchemaError(f"{path}.action: expected one of {FEEDBACK_ACTIONS}, found {obj.action!r}")
    except TopicError as exc:
        raise SchemaError(f"{path}: {exc}") from None
