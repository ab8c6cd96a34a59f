"""The device agent: source bytes -> frames -> minute windows -> engine -> SQLite outbox -> MQTT.

One thread does all the work (reading, scoring, SQLite); paho's network thread only reports
into a queue (device/sync.py). Bad frames, bad payloads and bad commands are counted and logged,
never raised: the agent keeps serving.

The agent in parts: a per-kind :class:`~device.profiles.DeviceProfile` (metrics, the engine's
row, the daily summary), a :class:`~device.releases.ReleaseHandler` (models, detector config,
release commands) and a :class:`~device.syncer.Syncer` (the uplink: batches, acks, refusals).
What is left here is the loop: ingest, score, record, and the state that survives a restart.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.budget import SHED_RAW, LatencyBudget
from device.clock import Clock
from device.commands import CommandHandler, Position
from device.config import AgentConfig
from device.detect.class_rates import Finding
from device.detect.engine import DeviationEvent, Engine, EngineOutput
from device.detect.health import HealthWatch
from device.detect.nightwatch import NightAssessment, NightWatch, NightWatchStateError
from device.errors import CommandError, SetupError
from device.features.daily import DayAccumulator, json_floats
from device.features.minute import MinuteAggregator, MinuteWindow
from device.features.nightly import NightlyTracker
from device.identity import INFO_SCHEMA, info_schema, resolve_for_source, stream_kind
from device.kernels.loader import kernels
from device.metrics_sink import NULL_SINK, MetricsSink
from device.outbox import BufferFullError, DiskFullError, Outbox, OutboxUnavailableError
from device.profiles import DeviceProfile, profile_for
from device.reader import (
    ByteSource,
    SerialSource,
    TraceSource,
    awaits_device,
    open_source,
    wait_for_source,
)
from device.releases import AGENT_VERSION, ActivityModel, ReleaseHandler
from device.syncer import MAX_BATCH_BYTES, Syncer, fit_batch
from device.trace import TraceRing
from shared.alert_gate import EventNumbers
from shared.codec import to_json
from shared.frames import Frame, FrameDecoder
from shared.payloads import DeviceInfo, PayloadError, Reading, decode_payload
from shared.records import (
    Backlog,
    CommandReport,
    Direction,
    Event,
    EventTrace,
    NightVerdict,
    RawWindow,
    RecordBody,
    Severity,
    kind_of,
)
from shared.topics import TopicError, check_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["AGENT_VERSION", "MAX_BATCH_BYTES", "Agent", "Progress", "fit_batch"]
logger = logging.getLogger(__name__)
TRACE_MAX_BYTES = 64 * 1024  # an event's trace: half the outbox's 128 KiB row cap
STATE_EVERY_S = 3600.0  # persist engine state once per device hour ...
STATE_MIN_WALL_S = 30.0  # ... but not more often than this in wall time (replays run days in seconds)
OUTBOX_RETRY_S = 10.0  # an outbox the full disk kept closed at start: try to open it this often


def _utc_day(ts: float) -> str:
    """UTC day of a timestamp (called once per window; the formatting is cached per day)."""
    return _day_name(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def _day_name(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


@dataclass(frozen=True)
class Progress:
    """How far an agent got, safe to read from another thread (the CLI's progress lines)."""

    device_id: str
    started: bool  # the source is open
    ts: float | None  # the newest sensor time (the device's timeline)
    windows: int
    events: int


class Agent:
    """One agent per device. ``run()`` until the source ends (exit_on_eof) or ``stop`` is set."""

    def __init__(self, cfg: AgentConfig, *, classifier: ActivityModel | str | None = "factory",
                 connect: bool = True) -> None:
        # kind and id: configured, else the trace's device-info frame (device/identity.py); a
        # serial device's kind is learnt from its first device-info frame (before any window)
        self._kind_given = bool(cfg.kind)
        cfg = resolve_for_source(cfg)
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"state dir {self.state_dir}: cannot create it ({exc.strerror}): pass a writable "
                             "folder as --state-dir (state_dir)") from None
        ob = cfg.outbox
        # a full disk may keep it closed: the agent scores all the same and opens it later (pump)
        self.outbox = Outbox(ob.path or self.state_dir / "outbox.db", ob.max_bytes, ob.resend_after, ob.raw_ttl)
        self.outbox_retry_s = OUTBOX_RETRY_S
        self._outbox_tried = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.decoder = FrameDecoder()
        self.minutes = MinuteAggregator()
        self.profile: DeviceProfile = profile_for(cfg.kind, cfg)
        # configured, else learnt from the device-info frame (kept across restarts)
        self.individual_id = ""
        self._learn_individual(cfg.individual_id or (self.outbox.get("individual_id") or b"").decode(),
                               source="saved state")
        self._public_key = load_cloud_public_key(cfg.cloud_public_key)
        self._classifier = classifier
        self.budget = LatencyBudget(cfg.budget_ms)
        self.metrics: MetricsSink = NULL_SINK  # edgeloop agent --metrics installs a Prometheus sink
        # called with (minute_ts, feature vector, engine output) after each window (replay plots);
        # the output's arrays are the engine's buffers: copy what you keep
        self.observer: Callable[[float, list[float], Any], None] | None = None
        self.health = HealthWatch(cfg.frozen_alert_minutes, cfg.dropout_alert_minutes, cfg.battery_alert_percent)
        self._use_profile(self.profile)
        self.raw_until = 0.0
        self.end_of_stream = False
        self.clock: Clock[tuple[int, Reading]] = Clock(counts=self.counts)
        self.clock.restore(self.outbox.get("clock"))
        self._last_state_ts = -math.inf
        self._last_state_wall = -math.inf
        self._last_expire = time.monotonic()
        self._frame_mono = time.monotonic()  # when the timeline last moved (command expiry)
        self._stop = threading.Event()  # run()'s: ends a wait for a serial device to come back
        # a trace remembers how far it got: the stream offset where frames not yet in a closed
        # window begin, saved with the engine; records of windows up to the watermark are not
        # appended again when a resumed trace replays them (they were, before a crash)
        self._trace_key: str | None = None
        self._open_from = 0
        self._window_ts: float | None = None
        self._replay_until: float | None = None
        self.day: DayAccumulator | None = None
        self._source: ByteSource | None = None
        self.syncer = Syncer(cfg.device_id, self.outbox, cfg.mqtt if connect else None, ob.batch_size, self.counts,
                             on_command=self._on_command)
        self.uplink = self.syncer.uplink  # the MQTT transport (start/stop/connected), for callers that drive it
        self.commands = CommandHandler(cfg.device_id, self._public_key, self._load_position, self._save_position,
                                       incarnation=self.outbox.incarnation, now=self._timeline_now)
        self.commands.register("config", self._cmd_config)
        self.commands.register("collect_more", self._cmd_collect_more)
        for name, handler in self.releases.commands().items():
            self.commands.register(name, handler)

    def _use_profile(self, profile: DeviceProfile) -> None:
        """Build what depends on the device's kind: the engine (restored), a collar's night
        watch, the event trace ring and the release handler."""
        self.profile = profile
        self.engine = self._restore_engine()
        self._restore_profile()
        # a collar's nights (resting HR overnight, restlessness, the day's steps) through the night
        # watch: the morning's verdict travels in the daily summary (``night``)
        self.nights = NightlyTracker() if profile.kind == "collar" else None
        self.watch = self._restore_watch() if self.nights is not None else None
        self.last_night: NightAssessment | None = None
        self.trace = (TraceRing(profile.metrics, self.cfg.event_trace_hours * 3600.0)
                      if self.cfg.event_trace_hours > 0 else None)
        self.releases = ReleaseHandler(profile, self.state_dir, self._public_key, self._classifier, self.counts,
                                       reconfigure=self.apply_detector_config)
        self.apply_detector_config()

    def _learn_kind(self, info: dict[str, str]) -> None:
        """A device-info frame naming another kind than the agent runs: followed before the first
        window (a serial device read without ``--kind``); a configured kind wins (logged); after
        the first window the kind is kept and the mismatch counted (restart with ``--kind``)."""
        kind = stream_kind(info)
        if kind is None or kind == self.profile.kind:
            return
        if self._kind_given or self.counts["windows"]:
            self.counts["device_kind_mismatch"] += 1
            logger.error("ingest.device_kind_mismatch", extra={
                "device_id": self.cfg.device_id, "reason": f"the device says kind {kind!r}, the agent runs "
                f"{self.profile.kind!r}: restart the agent with --kind {kind} (or without --kind)"})
            return
        self.cfg = replace(self.cfg, kind=kind)  # type: ignore[arg-type]
        self._use_profile(profile_for(kind, self.cfg))
        self.counts["kind_from_stream"] += 1
        logger.info("agent.kind_from_stream", extra={"device_id": self.cfg.device_id, "kind": kind})

    # ---- state ---------------------------------------------------------------------------------
    def _restore_engine(self) -> Engine:
        m, d = self.profile.metrics, self.profile.directions
        blob = self.outbox.get("engine_state")
        names = self.outbox.get("engine_metrics")
        if blob:
            try:
                saved = tuple(json.loads(names)) if names else None
                eng = Engine.from_state(blob, m, directions=d, saved_metrics=saved)
                self.counts["engine_restored"] += 1
                return eng
            except ValueError as exc:
                logger.warning("agent.state_unreadable", extra={"reason": str(exc)})
                self.counts["engine_state_unreadable"] += 1
        return Engine(m, directions=d)

    def _restore_profile(self) -> None:
        """The profile's own learnt state (a camera's class rates), saved with the engine."""
        blob = self.outbox.get("profile_state")
        if not blob:
            return
        try:
            saved = json.loads(blob)
            if saved.get("kind") == self.profile.kind:
                self.profile.restore(saved["state"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("agent.state_unreadable", extra={"reason": f"profile state: {exc}"})
            self.counts["profile_state_unreadable"] += 1

    def _restore_watch(self) -> NightWatch:
        blob = self.outbox.get("nightwatch_state")
        if blob:
            try:
                return NightWatch.from_state(blob)
            except NightWatchStateError as exc:
                logger.warning("agent.state_unreadable", extra={"reason": str(exc)})
                self.counts["nightwatch_state_unreadable"] += 1
        return NightWatch()

    def _night_verdict(self, day_ts: float) -> NightVerdict | None:
        """This morning's verdict on last night, for the summary of the day it was read."""
        a = self.last_night
        if a is None or a.day != int(day_ts // 86400.0):
            return None
        return NightVerdict(level=a.level, evidence=round(a.evidence, 3), night_z=round(a.night, 3),  # type: ignore[arg-type]
                            z=dict(zip(a.z, json_floats(a.z.values()), strict=True)),
                            baseline=dict(zip(a.baseline, json_floats(a.baseline.values()), strict=True)))

    def save_state(self) -> None:
        """The engine, the sensor clock's timeline, how far a trace got and who this is, saved
        together (one transaction)."""
        state = {"engine_state": self.engine.state(),
                 "engine_metrics": json.dumps(list(self.engine.metrics)).encode(),
                 "clock": self.clock.state()}
        if self.watch is not None:
            state["nightwatch_state"] = self.watch.state()
        profile_state = self.profile.state()
        if profile_state is not None:
            state["profile_state"] = json.dumps({"kind": self.profile.kind, "state": profile_state}).encode()
        if self._trace_key is not None:
            held = self.clock.held_first()
            pos = self._open_from if held is None else min(self._open_from, held[0])
            state["trace"] = json.dumps({"key": self._trace_key, "pos": pos}).encode()
        if self.individual_id:
            state["individual_id"] = self.individual_id.encode()
        try:
            self.outbox.put_many(state)
        except DiskFullError as exc:  # kept in memory: saved at the next attempt that fits
            self.counts["state_unsaved"] += 1
            logger.error("agent.state_unsaved", extra={"device_id": self.cfg.device_id, "reason": str(exc)})

    def _load_position(self) -> Position:
        """The last accepted command's (epoch, counter), kept in the outbox's state (an agent
        before command v2 saved the counter alone)."""
        v = self.outbox.get("command_counter")
        if not v:
            return Position()
        try:
            d = json.loads(v)
            return Position(int(d["epoch"]), int(d["counter"])) if isinstance(d, dict) else Position(0, int(d))
        except (ValueError, KeyError, TypeError):
            logger.error("commands.position_unreadable", extra={"value": v})
            return Position(0, 2**62)  # refuse until the cloud re-syncs, rather than accept replays

    def _save_position(self, pos: Position) -> None:
        try:
            self.outbox.put("command_counter", json.dumps({"epoch": pos.epoch, "counter": pos.counter}).encode())
        except DiskFullError as exc:  # an unsaved position would let the command be replayed
            raise CommandError(f"cannot save the command counter ({exc}): command refused") from None

    def _timeline_now(self) -> float:
        """Now on the agent's timeline (the sensor clock records are dated by, which the cloud's
        command expiry follows), moved on by the wall time since the last frame; the wall clock
        before any frame."""
        if self.clock.last is None:
            return time.time()
        return self.clock.last + max(0.0, time.monotonic() - self._frame_mono)

    def _retry_outbox(self) -> None:
        """The outbox could not be opened (disk full): try again every ``outbox_retry_s``; once
        open, restore the state it kept (a learnt baseline is worth more than the minutes scored
        without it) and send under its incarnation."""
        if self.outbox.available or time.monotonic() - self._outbox_tried < self.outbox_retry_s:
            return
        self._outbox_tried = time.monotonic()
        if not self.outbox.try_open():
            return
        self.counts["outbox_opened_late"] += 1
        if self.syncer.uplink is not None:
            self.syncer.uplink.incarnation = self.outbox.incarnation
        self.commands.incarnation = self.outbox.incarnation  # commands are bound to it
        if self.outbox.get("engine_state"):
            self.engine = self._restore_engine()
            self.apply_detector_config()
            if self.trace is not None:
                self.trace.reset()
        if self.watch is not None and self.outbox.get("nightwatch_state"):
            self.watch = self._restore_watch()
        if not self.individual_id:
            self._learn_individual((self.outbox.get("individual_id") or b"").decode(), source="saved state")
        logger.warning("outbox.opened", extra={"device_id": self.cfg.device_id, "incarnation": self.outbox.incarnation,
                                               "not_kept": self.counts["outbox_unavailable"]})

    # ---- input -----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Decode bytes and process every completed frame."""
        self._frames(self.decoder.feed(data))

    def _frames(self, frames: list[Frame]) -> None:
        if frames:
            self._frame_mono = time.monotonic()
        for frame in frames:
            try:
                reading = decode_payload(frame.sensor, frame.payload)
            except PayloadError as exc:
                self.counts["payload_rejected"] += 1
                logger.warning("ingest.payload_rejected", extra={"reason": str(exc)})
                continue
            if isinstance(reading, DeviceInfo):
                if reading.info.get("event") == "end_of_stream":
                    self.end_of_stream = True  # simulators mark the end of a finite stream
                    continue
                if info_schema(reading.info) > INFO_SCHEMA:
                    self.counts["device_info_newer_schema"] += 1  # the keys this agent knows still read
                self._learn_kind(reading.info)
                if not self.individual_id:
                    self._learn_individual(reading.info.get("individual_id", ""))
                continue
            # one bad timestamp is held and dropped; a jump several frames agree on is followed
            for ts, (offset, r) in self.clock.admit(frame.ts_ms / 1000.0, (frame.offset, reading)):
                closed = self.minutes.add(ts, r)
                if closed is not None:
                    self._open_from = offset  # this frame opens the next minute: a resume starts here
                    self.process_window(closed)

    def _learn_individual(self, given: str, source: str = "device-info frame") -> None:
        """The device-info frame names the individual: checked like every other id. A bad one is
        refused and counted, and records stay filed under the device id (the individual of a
        device that names none) until a valid name arrives or one is configured."""
        if not given:
            if source == "device-info frame":
                self.individual_id = self.cfg.device_id
            return
        try:
            self.individual_id = check_id(given, "individual id")
        except TopicError as exc:
            self.counts["individual_id_rejected"] += 1
            logger.error("ingest.individual_id_rejected",
                         extra={"device_id": self.cfg.device_id, "reason": f"{source}: {exc}; records are "
                                "filed under the device id: set individual_id in the agent's config or fix "
                                "the name in the collar's firmware"})

    def process_window(self, w: MinuteWindow) -> None:
        t0 = time.perf_counter()
        self._window_ts = w.minute_ts
        accel = w.accel_window(self.releases.window_seconds)
        label = self.releases.classify(accel, float(w.accel_rate), w.minute_ts, self.budget, self.metrics)
        vec = self.profile.vector(w, label)
        if self.nights is not None and self.watch is not None:
            night = self.nights.add(w.minute_ts, w.heart_rate, w.steps)
            if night is not None:
                self.last_night = self.watch.update(night)
        if self.trace is not None:
            self.trace.before_row(w.minute_ts, self.engine.state)
        out = self.engine.process_one(w.minute_ts, vec, reuse=True)
        if self.observer is not None:
            self.observer(w.minute_ts, vec, out)
        if self.trace is not None:
            self.trace.add_row(w.minute_ts, vec)
        for ev in out.events:
            self._emit_event(ev)
        for f in self.profile.findings(w) + self.health.update(w.minute_ts, w.det_unchanged_s, w.battery):
            self._emit_finding(f)
        if w.minute_ts < self.raw_until and self.budget.allows(SHED_RAW):
            xyz = None if accel is None else tuple((float(x), float(y), float(z))
                                                   for x, y, z in np.round(accel, 3).tolist())
            self._append(RawWindow(w.minute_ts, json_floats(vec), self.profile.metrics, label, xyz), w.minute_ts)
        took = time.perf_counter() - t0
        self.budget.record(took * 1000.0, self.source_backlog())
        self.metrics.window(took)
        if not self.counts["windows"]:  # cold start ends here (scripts/bench_agent reads it)
            logger.info("agent.first_window", extra={"wall": time.time(), "cpu_s": time.process_time(),
                                                     "kernels": self.engine.kernel_path})
        self.counts["windows"] += 1
        # I/O below is not part of the scoring budget (SQLite fsyncs are the outbox's cost)
        self._accumulate_day(w, vec, label, out)
        if (w.minute_ts - self._last_state_ts >= STATE_EVERY_S
                and time.monotonic() - self._last_state_wall >= STATE_MIN_WALL_S):
            self.save_state()
            self._last_state_ts, self._last_state_wall = w.minute_ts, time.monotonic()

    def _emit_event(self, ev: DeviationEvent) -> None:
        gate = self.releases.gate
        if gate is not None and not gate.alerts(EventNumbers.from_event(ev)):
            self.counts["events_below_gate"] += 1  # the active release's gate holds it on the device
            return
        event = Event(start_ts=float(ev.start_ts), ts=float(ev.ts), metrics=tuple(ev.metrics),
                      directions=tuple(_direction(d) for d in ev.directions), score=float(ev.score),
                      severity=Severity(ev.severity), kind="sustained", baseline=json_floats(ev.baseline),
                      observed=json_floats(ev.observed), model_version=self.releases.model_version,
                      detector_version=self.releases.detector_version, trace=self._event_trace())
        self._append(event, ev.ts)
        self.counts["events"] += 1
        logger.info("agent.event", extra={"device_id": self.cfg.device_id, "metrics": ev.metrics})

    def _emit_finding(self, f: Finding) -> None:
        """A class-rate or health finding as an event of its kind (no engine trace: the cloud's
        release check replays engine events only)."""
        event = f.event(self.releases.model_version, self.releases.detector_version)
        self._append(event, f.ts)
        self.counts["events" if f.kind != "health" else "health_events"] += 1
        logger.info("agent.event", extra={"device_id": self.cfg.device_id, "kind": f.kind, "metrics": [f.what]})

    def _event_trace(self) -> EventTrace | None:
        """The longest trace that keeps the event row well inside the outbox's row cap (a long
        ``event_trace_hours`` with many metrics is cut at a later snapshot); None if none fits."""
        if self.trace is None:
            return None
        for start in range(self.trace.snapshots):
            tr = self.trace.export(start)
            if tr is not None and len(json.dumps(to_json(tr), separators=(",", ":"))) <= TRACE_MAX_BYTES:
                if start:
                    self.counts["event_trace_shortened"] += 1
                return tr
        self.counts["event_trace_dropped"] += 1
        return None

    def _append(self, body: RecordBody, ts: float, from_window: bool = True) -> None:
        """Queue a record. One a window made carries the window's time as the replay watermark;
        a resumed trace does not queue again what windows up to the watermark made."""
        kind = kind_of(body)
        marks = None
        if from_window and self._window_ts is not None:
            if self._replay_until is not None and self._window_ts <= self._replay_until:
                self.counts["replayed_not_resent"] += 1
                return
            marks = {"emitted_until": repr(self._window_ts).encode()}
        try:
            self.outbox.append(kind, self.individual_id or self.cfg.device_id, ts, to_json(body), marks)
        except OutboxUnavailableError:  # the disk was full at start: counted (logged once by the outbox)
            self.counts["outbox_unavailable"] += 1
        except BufferFullError as exc:  # bytes bound or disk full, with nothing left to evict
            self.counts["outbox_refused"] += 1
            logger.error("outbox.refused", extra={"reason": str(exc), "kind": kind})

    # ---- daily summary -----------------------------------------------------------------------
    def _accumulate_day(self, w: MinuteWindow, vec: list[float], label: str | None, out: EngineOutput) -> None:
        day = _utc_day(w.minute_ts)
        if self.day is not None and self.day.day != day:
            self.write_summary()
        if self.day is None:
            self.day = self.profile.new_day(day, w.minute_ts)
        self.profile.add_minute(self.day, w, vec, label, out.baseline[0] if out.baseline.size else out.baseline,
                                out.spread[0] if out.spread.size else out.spread)

    def write_summary(self) -> None:
        d, self.day = self.day, None
        if d is None:
            return
        rel = self.releases
        summary = replace(
            d.body(), latency=self.budget.report(), ingest=self.ingest_counts(),
            warming_up=self.engine.warming_up, model_version=rel.model_version,
            detector_version=rel.detector_version, agent_version=AGENT_VERSION,
            shadow=rel.shadow_stats.summary() if rel.shadow_stats.total else None,
            models=rel.status(), outbox=self.outbox.counters(), night=self._night_verdict(d.ts),
            # what still waits for the cloud's ack (the fleet page shows it beside the battery)
            backlog=Backlog(self.outbox.pending_count(), self.outbox.bytes_used))
        self._append(summary, d.ts)

    def ingest_counts(self) -> dict[str, int]:
        return {**self.decoder.stats.as_dict(), **self.minutes.counts, **self.counts}

    # ---- commands ----------------------------------------------------------------------------
    def _cmd_config(self, args: dict[str, Any]) -> dict[str, Any]:
        action, metric = args.get("action"), args.get("metric")
        if action == "accept_new_normal":
            self.engine.accept_new_normal(metric)
        elif action == "widen":
            self.engine.widen(str(metric), float(args.get("factor", 1.5)))
        else:
            raise ValueError(f"config action {action!r} unknown: use accept_new_normal or widen")
        if self.trace is not None:  # earlier snapshots lack this change: replays start after it
            self.trace.reset()
        self.save_state()
        return {"action": action, "metric": metric}

    def _cmd_collect_more(self, args: dict[str, Any]) -> dict[str, Any]:
        minutes = float(args.get("minutes", 60))
        if not 0 < minutes <= 24 * 60:
            raise ValueError(f"collect_more minutes={minutes} must be in (0, 1440]")
        self.raw_until = max(self.raw_until, (self.clock.last or time.time()) + minutes * 60.0)
        return {"raw_until": self.raw_until}

    def apply_detector_config(self, cfg: dict[str, Any] | None = None) -> None:
        """Apply a release's detector config (default: the active one's; see device/releases.py);
        a rebuilt engine starts a new trace (earlier snapshots lack the change)."""
        engine = self.releases.configure(self.engine, self.profile, cfg)
        if engine is not self.engine:
            self.engine = engine
            if self.trace is not None:
                self.trace.reset()

    def _on_command(self, payload: bytes) -> None:
        cid, ok, detail, data = self.commands.handle(payload)
        self._append(CommandReport(cid, ok, detail, to_json(data)), self.clock.last or time.time(), from_window=False)

    # ---- sync ------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Handle network events and publish due outbox rows (device/syncer.py); an outbox the
        disk kept closed is tried again now and then."""
        self._retry_outbox()
        self.syncer.pump()

    def source_backlog(self) -> int:
        return self._source.backlog() if self._source is not None else 0

    # ---- main loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, source: ByteSource | None = None,
            hurry: threading.Event | None = None) -> dict[str, Any]:
        """Serve until the source ends (with ``exit_on_eof``) or ``stop`` is set; then finish the
        open day, drain the uplink and save. Returns the final report.

        At the end of the input the drain waits up to ``drain_timeout`` for the cloud's acks; after
        a stop request only while the cloud answers (device/syncer.py), so SIGTERM with the cloud
        out of reach stops at once; ``hurry`` (a second SIGINT) cuts any drain short. What is not
        acknowledged stays in the outbox for the next start."""
        stop = self._stop = stop or threading.Event()
        if source is None and not self.cfg.source:
            raise ValueError("no source: set source (serial port, pyserial URL or trace file)")
        # a trace or a port that is there opens now (a missing trace fails before any connect); a
        # serial device not plugged in yet is waited for below, the uplink draining meanwhile
        waits = source is None and awaits_device(self.cfg.source)
        self._source = source or (None if waits else open_source(self.cfg.source, self.cfg.baudrate))
        self.syncer.start()
        try:
            if waits:
                self._source = wait_for_source(self.cfg.source, self.cfg.baudrate, stop, idle=self.pump)
            if self._source is not None:
                self._resume(self._source)
            while self._source is not None and not stop.is_set() and not self.step():
                pass
            asked = stop.is_set()
            self.finish()
            self.syncer.drain(self.cfg.drain_timeout, hurry=hurry, patient=not asked)
        finally:
            self.save_state()
            self.syncer.stop()
            if self._source is not None:
                self._source.close()
        return self.report()

    def _resume(self, source: ByteSource) -> None:
        """A trace read before continues where it got to; another trace starts at its beginning."""
        if not isinstance(source, TraceSource):
            return
        self._trace_key = source.key()
        try:
            saved = json.loads(self.outbox.get("trace") or b"{}")
            pos = int(saved["pos"]) if saved.get("key") == self._trace_key else 0
        except (ValueError, KeyError, TypeError):
            pos = 0
        if not 0 < pos <= source.size:
            return
        source.seek(pos)
        self.decoder.offset = self._open_from = pos
        mark = self.outbox.get("emitted_until")
        self._replay_until = float(mark.decode()) if mark else None
        self.counts["trace_resumed"] += 1
        logger.info("agent.trace_resumed", extra={"device_id": self.cfg.device_id, "position": pos,
                                                  "of": source.size, "replay_until": self._replay_until})

    def step(self) -> bool:
        """One pass of the loop: read what the source has, score it, sync, housekeeping. True when
        the input has ended and the agent should stop (``exit_on_eof``)."""
        assert self._source is not None
        data = self._source.read()
        if data:
            self.feed(data)
        self.pump()
        if time.monotonic() - self._last_expire > 60.0:
            self.outbox.expire()
            self._last_expire = time.monotonic()
        if not (self._source.eof or self.end_of_stream):
            return False
        if self.cfg.exit_on_eof:
            return True
        if self._source.eof and isinstance(self._source, SerialSource) and self.cfg.source:
            self._replug()
            return False
        time.sleep(0.1)
        return False

    def _replug(self) -> None:
        """The serial device went away (a USB collar unplugged): wait for it to come back (logged
        once, with backoff; the uplink drains meanwhile) and read on; a stop ends the wait."""
        assert self._source is not None
        self.counts["source_lost"] += 1
        logger.warning("reader.lost", extra={"device_id": self.cfg.device_id, "source": self.cfg.source})
        self._source.close()
        src = wait_for_source(self.cfg.source, self.cfg.baudrate, self._stop, idle=self.pump, retry_open=True)
        if src is not None:
            self._source = src
            self.counts["source_reopened"] += 1

    def finish(self) -> None:
        """End of input: close the open window and write the partial day's summary."""
        at_end = self._source is None or self._source.eof or self.end_of_stream
        self._frames(self.decoder.flush())
        self.clock.flush()
        if at_end:  # every byte is in a window now; stopped mid-stream, the open minute is read again
            self._open_from = self.decoder.offset
        w = self.minutes.flush()
        if w is not None:
            self.process_window(w)
        self.write_summary()
        self.save_state()

    def progress(self) -> Progress:
        """Where the agent is (thread-safe reads of plain values; no SQLite)."""
        return Progress(self.cfg.device_id, self._source is not None, self.clock.last,
                        self.counts["windows"], self.counts["events"])

    def report(self) -> dict[str, Any]:
        rejected = {"count": self.outbox.rejected_count(),
                    "latest": [asdict(r) for r in self.outbox.rejected_rows(5)]}
        return {"device_id": self.cfg.device_id, "individual_id": self.individual_id,
                "incarnation": self.outbox.incarnation,
                "pending": self.outbox.pending_count(), "rejected": rejected, "outbox": self.outbox.counters(),
                "ingest": self.ingest_counts(), "latency": to_json(self.budget.report()),
                "commands": dict(self.commands.counts), "kernels": kernels().info()}


def _direction(d: int) -> Direction:
    return 1 if d > 0 else -1 if d < 0 else 0


def load_cloud_public_key(path: str) -> Ed25519PublicKey | None:
    """The cloud's public key (commands, bundles), or a :class:`SetupError` naming the file."""
    if not path:
        return None
    from shared.signing import SigningError, load_public_key

    try:
        return load_public_key(Path(path))
    except OSError as exc:
        raise SetupError(f"cloud_public_key: cannot read {path} ({exc.strerror}): pass the cloud.pub written "
                         "by `edgeloop cloud --keygen DIR`") from None
    except SigningError as exc:
        raise SetupError(f"cloud_public_key: {path}: {exc}: pass the cloud.pub written by "
                         "`edgeloop cloud --keygen DIR`") from None
