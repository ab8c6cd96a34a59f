"""Frigate's MQTT event messages as perception input: per camera, objects per minute by class.

Frigate (an NVR with on-device object detection) publishes one JSON message on
``<topic_prefix>/events`` (default ``frigate/events``) per change of a tracked object
(https://docs.frigate.video/integrations/mqtt/)::

    {"type": "new" | "update" | "end",
     "before": {...}, "after": {"id": "1607123955.475377-mxklsc", "camera": "front_door",
               "frame_time": 1607123961.837752, "label": "person", "score": 0.79,
               "top_score": 0.96, "false_positive": false, "start_time": 1607123955.475377,
               "end_time": null, ...}}

:class:`FrigateCameras` keeps, per camera, the tracked objects and, as time passes (the
messages' own ``frame_time``), closes minutes: an object is present in every minute from its
``start_time`` to its last ``frame_time`` (its ``end_time`` once it ended); a minute with none is
an observation too (no objects). Each closed minute goes through that camera's own
:class:`~device.detect.class_rates.ClassRates` (novel classes, rates far off by hour of day,
scene changes) and its own engine on the mean ``top_score`` of the objects present (confidence
drift, as for a Pi camera; NaN in a minute without objects). No I/O: messages in, findings out.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from device.detect.class_rates import ClassRates, Finding
from device.detect.engine import Engine

RESTART_AFTER_S = 86400.0  # a camera's timeline that jumps by more (either way) restarts its minutes
STALE_S = 3600.0  # an object not ended whose last message is this old is no longer counted (a lost "end")


class FrigateError(ValueError):
    """A message that is not a Frigate event (the reason names the field)."""


@dataclass(frozen=True)
class FrigateObject:
    """One tracked object's state from an event message."""

    type: str  # new, update, end
    id: str
    camera: str
    label: str
    start_time: float
    frame_time: float
    end_time: float | None
    score: float  # top_score if given, else score
    false_positive: bool


def _num(obj: Mapping[str, Any], key: str, required: bool = True) -> float | None:
    v = obj.get(key)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise FrigateError(f"{key}: expected a number, found {v!r:.40}")
    return float(v)


def parse_event(payload: bytes) -> FrigateObject:
    """One ``frigate/events`` message; raises FrigateError naming what is wrong."""
    try:
        msg = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrigateError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise FrigateError("expected a JSON object with type, before and after")
    kind = msg.get("type")
    if kind not in ("new", "update", "end"):
        raise FrigateError(f"type: expected new, update or end, found {kind!r:.40}")
    obj = msg.get("after") or msg.get("before")
    if not isinstance(obj, dict):
        raise FrigateError("after: expected the tracked object (a JSON object)")
    for key in ("id", "camera", "label"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise FrigateError(f"after.{key}: expected a non-empty string, found {obj.get(key)!r:.40}")
    start = _num(obj, "start_time")
    assert start is not None
    frame = _num(obj, "frame_time", required=False)
    end = _num(obj, "end_time", required=False)
    score = _num(obj, "top_score", required=False)
    if score is None:
        score = _num(obj, "score", required=False)
    return FrigateObject(kind, obj["id"], obj["camera"], obj["label"], start,
                         max(start, frame if frame is not None else start, end or start), end,
                         score if score is not None else math.nan, bool(obj.get("false_positive", False)))


@dataclass
class Tracked:
    label: str
    first: float
    last: float
    ended: bool = False
    score: float = math.nan

    def present(self, m: float) -> bool:
        """In the minute starting at ``m``: from its start to its end (or, still tracked, until
        ``STALE_S`` after its last message)."""
        until = self.last if self.ended else self.last + STALE_S
        return self.first < m + 60.0 and until >= m


CONFIDENCE = ("confidence",)
DIRECTIONS = {"confidence": -1}  # a dirty lens or a scene the model never learnt lowers it


@dataclass
class Camera:
    """One camera: its tracked objects, the next minute to close, its class rates and the
    engine on its detection confidence."""

    rates: ClassRates
    engine: Engine = field(default_factory=lambda: Engine(CONFIDENCE, directions=DIRECTIONS))
    objects: dict[str, Tracked] = field(default_factory=dict)
    next_minute: float | None = None


@dataclass
class FrigateCameras:
    """Per camera baselines from a stream of Frigate event messages."""

    learn_days: float = 3.0
    tz_offset_h: float = 0.0
    cameras: dict[str, Camera] = field(default_factory=dict)
    restarts: int = 0  # camera timelines restarted after a jump of over a day

    def camera(self, name: str) -> Camera:
        cam = self.cameras.get(name)
        if cam is None:
            cam = self.cameras[name] = Camera(ClassRates(learn_days=self.learn_days, tz_offset_h=self.tz_offset_h))
        return cam

    def add(self, obj: FrigateObject) -> list[tuple[str, Finding]]:
        """Take one message; returns (camera, finding) for the minutes it closes. Messages that
        arrive late (their minute is closed) still mark the object for the minutes to come."""
        cam = self.camera(obj.camera)
        now = obj.frame_time
        found = self.advance(obj.camera, now)
        if obj.false_positive:
            cam.objects.pop(obj.id, None)
            return found
        ended = obj.type == "end" or obj.end_time is not None
        t = cam.objects.get(obj.id)
        if t is None:
            cam.objects[obj.id] = Tracked(obj.label, obj.start_time, now, ended, obj.score)
        else:
            t.label, t.last, t.ended = obj.label, max(t.last, now), t.ended or ended
            t.score = obj.score if math.isfinite(obj.score) else t.score
        return found

    def advance(self, name: str, now: float) -> list[tuple[str, Finding]]:
        """Close every minute of camera ``name`` that ended by ``now``."""
        cam = self.camera(name)
        minute = math.floor(now / 60.0) * 60.0
        if cam.next_minute is None or abs(minute - cam.next_minute) > RESTART_AFTER_S:
            # first message, a camera silent for over a day, or a clock set far off (one bogus
            # timestamp must not stall the camera): its minutes restart here
            if cam.next_minute is not None:
                self.restarts += 1
                cam.objects.clear()  # they belong to the old timeline
            cam.next_minute = minute
        out: list[tuple[str, Finding]] = []
        while cam.next_minute < minute:
            m = cam.next_minute
            objects: dict[str, int] = {}
            scores = []
            for t in cam.objects.values():
                if t.present(m):
                    objects[t.label] = objects.get(t.label, 0) + 1
                    if math.isfinite(t.score):
                        scores.append(t.score)
            out += [(name, f) for f in cam.rates.update(m, objects)]
            conf = sum(scores) / len(scores) if scores else math.nan
            out += [(name, _drift(ev)) for ev in cam.engine.process_one(m, [conf], reuse=True).events]
            cam.objects = {k: t for k, t in cam.objects.items() if t.present(m + 60.0) or t.first >= m + 60.0}
            cam.next_minute = m + 60.0
        return out

    def state(self) -> dict[str, Any]:
        return {name: {"rates": cam.rates.state(), "engine": base64.b64encode(cam.engine.state()).decode()}
                for name, cam in self.cameras.items()}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore each camera's rates and engine (a bad state raises ValueError naming it)."""
        for name, s in state.items():
            cam = self.camera(str(name))
            try:
                cam.rates.restore(s["rates"])
                cam.engine = Engine.from_state(base64.b64decode(s["engine"]), CONFIDENCE, directions=DIRECTIONS)
            except (KeyError, TypeError, binascii.Error) as exc:
                raise ValueError(f"camera {name!r}: state unreadable: {exc}") from None


def _drift(ev: Any) -> Finding:
    """An engine event on a camera's confidence as a finding (kind ``sustained``)."""
    return Finding("sustained", "confidence", float(ev.start_ts), float(ev.ts), round(float(ev.observed[0]), 4),
                   round(float(ev.baseline[0]), 4), round(float(ev.score), 3), ev.severity,
                   direction=-1 if ev.directions[0] < 0 else 1)
