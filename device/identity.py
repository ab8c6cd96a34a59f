"""Who a device is: its kind and id, from the configuration or else from the device-info frame.

The device-info frame (sensor 0x7F, docs/protocol.md) names the device: ``schema`` (the frame's
version, "2"; a frame without one is version 1), ``device_id``, ``kind`` and ``individual_id``.
A trace file says who recorded it in its first frames, so ``edgeloop replay trace`` and
``edgeloop agent --source FILE`` need no ``--kind``; a configured kind or id only overrides.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

from device.config import KINDS, AgentConfig
from shared.frames import FrameDecoder
from shared.payloads import DeviceInfo, PayloadError, SensorId, decode_payload
from shared.topics import TopicError, check_id

logger = logging.getLogger(__name__)
INFO_SCHEMA = 2  # version 1: no "schema" key, "kind" optional (collar)
DEFAULT_DEVICE_IDS = {"collar": "collar-000", "perception": "pi-000"}
HEAD_BYTES = 64 * 1024  # the device-info frame is a trace's first frame; look no further than this


def info_schema(info: dict[str, str]) -> int:
    """The device-info frame's version (1 when it names none or an unreadable one)."""
    try:
        return int(info.get("schema", "1"))
    except ValueError:
        return 1


def read_trace_info(path: str | Path) -> dict[str, str] | None:
    """The first device-info frame in a trace file's head, or None (not a file, none there)."""
    p = Path(path)
    if not p.is_file():
        return None
    with open(p, "rb") as f:
        head = f.read(HEAD_BYTES)
    for frame in FrameDecoder().feed(head):
        if frame.sensor != SensorId.DEVICE_INFO:
            continue
        try:
            reading = decode_payload(frame.sensor, frame.payload)
        except PayloadError:
            continue
        if isinstance(reading, DeviceInfo) and reading.info.get("event") != "end_of_stream":
            return reading.info
    return None


def stream_kind(info: dict[str, str]) -> str | None:
    """The kind a device-info frame names, if it is one this agent knows (else None, logged)."""
    kind = info.get("kind", "")
    if not kind:
        return None
    if kind not in KINDS:
        logger.error("identity.kind_unknown", extra={"reason": f"device-info frame names kind {kind!r}; "
                                                     f"known kinds: {', '.join(KINDS)}: set --kind"})
        return None
    return kind


def stream_device_id(info: dict[str, str]) -> str | None:
    given = info.get("device_id", "")
    if not given:
        return None
    try:
        return check_id(given, "device id")
    except TopicError as exc:
        logger.error("identity.device_id_rejected", extra={"reason": f"device-info frame: {exc}; set --device-id"})
        return None


def resolve(cfg: AgentConfig, info: dict[str, str] | None) -> AgentConfig:
    """``cfg`` with kind and device id filled: configured values win, then the device-info
    frame's, then the defaults (a collar; the kind's default id: ``pi-000`` for a Pi)."""
    info = info or {}
    kind = cfg.kind or stream_kind(info) or "collar"
    if cfg.kind and stream_kind(info) not in (None, cfg.kind):
        logger.warning("identity.kind_overridden", extra={
            "reason": f"the trace says kind {info.get('kind')!r}; --kind {cfg.kind} overrides it"})
    device_id = cfg.device_id or stream_device_id(info) or DEFAULT_DEVICE_IDS[kind]
    return replace(cfg, kind=kind, device_id=device_id)  # type: ignore[arg-type]


def resolve_for_source(cfg: AgentConfig) -> AgentConfig:
    """Resolve against the trace file the agent will read (serial ports are not read ahead:
    the agent learns a kind from their first device-info frame, device/agent.py)."""
    if cfg.kind and cfg.device_id:
        return cfg
    return resolve(cfg, read_trace_info(cfg.source) if cfg.source else None)


def checked_individual(given: str, source: str, device_id: str, counts: Counter[str]) -> str | None:
    """A named individual, checked like every other id; a bad one is refused (None), counted and
    logged: the agent's records stay filed under the device id until a valid name arrives."""
    try:
        return check_id(given, "individual id")
    except TopicError as exc:
        counts["individual_id_rejected"] += 1
        logger.error("ingest.individual_id_rejected",
                     extra={"device_id": device_id, "reason": f"{source}: {exc}; records are "
                            "filed under the device id: set individual_id in the agent's config or fix "
                            "the name in the collar's firmware"})
        return None
