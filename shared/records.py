"""The records a device sends (events, daily summaries, raw windows, command reports), typed.

Each record kind has one frozen dataclass for its body; ``Record`` is one record of an uplink
batch: ``(seq, kind, ts, individual_id, body)``, identified by ``(device_id, incarnation, seq)``
(docs/protocol.md). Bodies are encoded and decoded by the one codec (``shared.codec``) under the
batch's schema version: ``decode`` checks every field against its type and each class's
``validate``; unknown fields are refused (a new field is a new schema version).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from shared.codec import SchemaError
from shared.topics import check_id

TRACE_VERSION = 1


class RecordKind(StrEnum):
    EVENT = "event"  # a sustained deviation: never evicted from the device outbox
    SUMMARY = "summary"  # one per device day
    RAW = "raw"  # a minute window uploaded after a collect_more command
    REPORT = "report"  # a command's result


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
# sustained: a deviation the engine confirmed (spikes are scored but never become events);
# novel: a perception finding against a camera's class rates (novel class, rate far off, scene
# change); health: the device itself (frozen camera, data dropout, low battery), decided by the
# cloud's health rules apart from behaviour alerts
EventKind = Literal["sustained", "novel", "health"]
Direction = Literal[-1, 0, 1]


def _finite_or_none(xs: tuple[float | None, ...]) -> bool:
    return all(x is None or math.isfinite(x) for x in xs)


@dataclass(frozen=True)
class EventTrace:
    """The engine input behind an event: a state snapshot (base64) at ``t0`` and every metric row
    since, exact floats, None for missing (device/trace.py; replayed by the cloud's release
    check, cloud/regression/engine_replay.py)."""

    v: int
    metrics: tuple[str, ...]
    t0: float
    state: str
    ts: tuple[float, ...]
    values: tuple[tuple[float | None, ...], ...]

    def validate(self) -> None:
        if self.v != TRACE_VERSION:
            raise SchemaError(f"v: trace version {self.v} is not {TRACE_VERSION}")
        if len(self.values) != len(self.ts):
            raise SchemaError(f"values: {len(self.values)} rows for {len(self.ts)} timestamps")
        if any(len(row) != len(self.metrics) for row in self.values):
            raise SchemaError(f"values: each row needs {len(self.metrics)} values (one per metric)")


@dataclass(frozen=True)
class Event:
    """A confirmed sustained deviation of one or more metrics (kind ``event``)."""

    start_ts: float  # when the deviation began (first contributing sample)
    ts: float  # when it was confirmed
    metrics: tuple[str, ...]  # contributing metrics
    directions: tuple[Direction, ...]  # +1 above baseline, -1 below, 0 unknown; one per metric
    score: float  # combined evidence in [0, 1]
    severity: Severity
    kind: EventKind = "sustained"
    baseline: tuple[float | None, ...] = ()  # per metric at detection (empty: not recorded)
    observed: tuple[float | None, ...] = ()  # recent level per metric (empty: not recorded)
    model_version: str = "unknown"  # the activity model (sha256 prefix)
    detector_version: str = "unknown"  # the detector config
    warming_up: bool = False  # the baseline was still learning
    tz_offset_h: float | None = None  # the individual's time zone, if the device knows it
    trace: EventTrace | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))

    @property
    def onset(self) -> float:
        """When the deviation began, never after it was confirmed."""
        return min(self.start_ts, self.ts)

    def validate(self) -> None:
        n = len(self.metrics)
        if not n or not all(self.metrics):
            raise SchemaError(f"metrics: expected a non-empty list of names, found {list(self.metrics)!r:.60}")
        if len(self.directions) != n:
            raise SchemaError(f"directions: expected {n} (one per metric), found {len(self.directions)}")
        for name in ("baseline", "observed"):
            v = getattr(self, name)
            if len(v) not in (0, n):
                raise SchemaError(f"{name}: expected {n} values (one per metric) or none, found {len(v)}")
        if not 0.0 <= self.score <= 1.0:
            raise SchemaError(f"score: expected a number in [0, 1], found {self.score}")
        if self.tz_offset_h is not None and not -14.0 <= self.tz_offset_h <= 14.0:
            raise SchemaError(f"tz_offset_h: expected hours in [-14, 14], found {self.tz_offset_h}")


@dataclass(frozen=True)
class HourlySeries:
    """24 hourly values of one metric (hour of day, UTC): mean, baseline and spread."""

    mean: tuple[float | None, ...]
    baseline: tuple[float | None, ...]
    spread: tuple[float | None, ...]

    def validate(self) -> None:
        for name in ("mean", "baseline", "spread"):
            if len(getattr(self, name)) != 24:
                raise SchemaError(f"{name}: expected 24 hourly values, found {len(getattr(self, name))}")


@dataclass(frozen=True)
class SleepPeriod:
    start_ts: float
    end_ts: float
    minutes: int


@dataclass(frozen=True)
class RestDay:
    """A collar day's rest and sleep (device/features/rest.py): a night counts on the day it ends."""

    minutes: int  # still minutes
    hourly_minutes: tuple[int, ...]  # still minutes per hour of day (24)
    periods: int  # rest periods that ended this day
    longest_minutes: int
    sleep_minutes: int
    sleep_periods: int
    main_sleep: SleepPeriod | None

    def validate(self) -> None:
        if len(self.hourly_minutes) != 24:
            raise SchemaError(f"hourly_minutes: expected 24 values, found {len(self.hourly_minutes)}")


@dataclass(frozen=True)
class Latency:
    """Per-window processing time (device/budget.py): p50/p99 in ms, overruns, shedding."""

    windows: int
    p50_ms: float
    p99_ms: float
    budget_ms: float
    overruns: int
    shed_level: int
    shed_shadow: int
    shed_raw: int


@dataclass(frozen=True)
class Disagreement:
    ts: float
    active: str
    shadow: str
    active_confidence: float
    shadow_confidence: float


@dataclass(frozen=True)
class ShadowSummary:
    """Active vs shadow model on the same windows (device/inference/slots.py)."""

    windows: int = 0
    agree: int = 0
    agreement: float | None = None
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # active -> shadow -> count
    disagreements: tuple[Disagreement, ...] = ()


@dataclass(frozen=True)
class Backlog:
    """What still waits in the device's outbox for the cloud's ack."""

    rows: int
    bytes: int


@dataclass(frozen=True)
class NightVerdict:
    """A collar's night watch on last night, read at 07:00 (device/detect/nightwatch.py)."""

    level: Literal["green", "yellow", "red"]  # yellow = watch, red = act
    evidence: float  # z-nights accumulated (red at the watch's threshold)
    night_z: float  # last night's combined z
    z: dict[str, float | None] = field(default_factory=dict)  # per feature: rhr, steps, restless
    baseline: dict[str, float | None] = field(default_factory=dict)  # per feature baseline


@dataclass(frozen=True)
class DailySummary:
    """One device day (kind ``summary``)."""

    day: str  # UTC day, YYYY-MM-DD
    minutes: int = 0  # minute windows seen
    steps: int = 0
    metrics_mean: dict[str, float] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)  # activity class -> minutes
    temp_max: float | None = None
    battery: int | None = None
    hourly: dict[str, HourlySeries] = field(default_factory=dict)
    rest: RestDay | None = None  # collars
    latency: Latency | None = None
    ingest: dict[str, int] = field(default_factory=dict)  # frame decoder and agent counters
    warming_up: bool = False
    model_version: str = ""
    detector_version: str = ""
    agent_version: str = ""
    shadow: ShadowSummary | None = None
    models: dict[str, Any] | None = None  # the model slots' status (device/inference/slots.py)
    outbox: dict[str, int] = field(default_factory=dict)  # outbox counters
    backlog: Backlog | None = None
    night: NightVerdict | None = None  # collars: the morning's night watch verdict


@dataclass(frozen=True)
class RawWindow:
    """One minute window uploaded after a ``collect_more`` command (kind ``raw``)."""

    minute_ts: float
    metrics: tuple[float | None, ...]
    names: tuple[str, ...] = ()  # the metric names, in the order of ``metrics``
    label: str | None = None  # the activity class
    accel: tuple[tuple[float, float, float], ...] | None = None  # g, the classifier's window

    def validate(self) -> None:
        if self.names and len(self.names) != len(self.metrics):
            raise SchemaError(f"names: {len(self.names)} names for {len(self.metrics)} metrics")


@dataclass(frozen=True)
class CommandReport:
    """A command's result (kind ``report``): travels with the records, so it is never lost."""

    command_id: str
    ok: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


RecordBody = Event | DailySummary | RawWindow | CommandReport
BODY_TYPES: dict[str, type] = {RecordKind.EVENT: Event, RecordKind.SUMMARY: DailySummary,
                               RecordKind.RAW: RawWindow, RecordKind.REPORT: CommandReport}
KIND_OF: dict[type, RecordKind] = {cls: RecordKind(kind) for kind, cls in BODY_TYPES.items()}


@dataclass(frozen=True)
class Record:
    """One outbox row as sent upstream; ``(device_id, incarnation, seq)`` is its identity (the
    device id and incarnation travel once per batch)."""

    discriminator: ClassVar[tuple[str, dict[str, type]]] = ("kind", BODY_TYPES)
    seq: int
    kind: RecordKind
    ts: float
    individual_id: str
    body: RecordBody

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RecordKind(self.kind))

    @classmethod
    def of(cls, seq: int, ts: float, individual_id: str, body: RecordBody) -> Record:
        return cls(seq, KIND_OF[type(body)], ts, individual_id, body)

    def validate(self) -> None:
        if not 1 <= self.seq < 2**63:
            raise SchemaError(f"seq: must be 1 .. 2^63-1, found {self.seq}")
        check_id(self.individual_id, "individual id")
        if not isinstance(self.body, BODY_TYPES[self.kind]):
            raise SchemaError(f"body: a {str(self.kind)!r} record needs a {BODY_TYPES[self.kind].__name__} "
                              f"body, found {type(self.body).__name__}")


def kind_of(body: RecordBody) -> RecordKind:
    return KIND_OF[type(body)]
