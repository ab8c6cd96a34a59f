"""The device agent: source bytes -> frames -> minute windows -> engine -> SQLite outbox -> MQTT.

One thread does all the work (reading, scoring, SQLite); paho's network thread only reports
into a queue (device/sync.py). Bad frames, bad payloads and bad commands are counted and logged,
never raised: the agent keeps serving.

The agent in parts: a per-kind :class:`~device.profiles.DeviceProfile` (metrics, the engine's
row, the daily summary), a :class:`~device.releases.ReleaseHandler` (models, detector config,
release commands), a :class:`~device.syncer.Syncer` (the uplink: batches, acks, refusals), the
state kept across restarts (device/agent_state.py), how far a trace got
(device/trace_position.py), the records queued (device/emit.py), a collar's nights
(device/nights.py), the daily summary (device/day_summary.py) and the agent's own commands
(device/command_handlers.py). What is left here is the loop: ingest, score, record.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from device.agent_state import AgentState, open_outbox
from device.budget import SHED_RAW, LatencyBudget
from device.clock import Clock
from device.command_handlers import AgentCommands
from device.commands import CommandHandler, load_cloud_public_key
from device.config import AgentConfig
from device.day_summary import day_summary
from device.detect.engine import EngineOutput
from device.detect.health import HealthWatch
from device.emit import Recorder
from device.features.daily import DayAccumulator, json_floats, utc_day
from device.features.minute import MinuteAggregator, MinuteWindow
from device.identity import (
    INFO_SCHEMA,
    checked_individual,
    info_schema,
    resolve_for_source,
    stream_kind,
)
from device.kernels.loader import kernels
from device.metrics_sink import NULL_SINK, MetricsSink
from device.nights import Nights
from device.profiles import DeviceProfile, profile_for
from device.reader import ByteSource, SerialSource, awaits_device, open_source, wait_for_source
from device.releases import AGENT_VERSION, ActivityModel, ReleaseHandler
from device.syncer import MAX_BATCH_BYTES, Syncer, fit_batch
from device.trace import TraceRing
from device.trace_position import TracePosition
from shared.codec import to_json
from shared.frames import Frame, FrameDecoder
from shared.payloads import DeviceInfo, PayloadError, Reading, decode_payload
from shared.records import CommandReport, RawWindow

__all__ = ["AGENT_VERSION", "MAX_BATCH_BYTES", "Agent", "Progress", "fit_batch"]
logger = logging.getLogger(__name__)
STATE_EVERY_S = 3600.0  # persist engine state once per device hour ...
STATE_MIN_WALL_S = 30.0  # ... but not more often than this in wall time (replays run days in seconds)


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
        self.outbox = open_outbox(cfg)  # a full disk may keep it closed: opened later (pump)
        self.counts: Counter[str] = Counter()
        self.state = AgentState(self.outbox, self.counts, cfg.device_id)  # what survives a restart
        self.decoder = FrameDecoder()
        self.minutes = MinuteAggregator()
        self.profile: DeviceProfile = profile_for(cfg.kind, cfg)
        # configured, else learnt from the device-info frame (kept across restarts)
        self.individual_id = ""
        self._learn_individual(cfg.individual_id or self.state.individual_id(), source="saved state")
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
        # how far a trace got, and the records a resumed trace does not queue again
        self.position = TracePosition(self.outbox, self.counts, cfg.device_id)
        self.records = Recorder(self.outbox, self.counts, cfg.device_id, self.position,
                                filed_under=lambda: self.individual_id or self.cfg.device_id)
        self.day: DayAccumulator | None = None
        self._source: ByteSource | None = None
        self.syncer = Syncer(cfg.device_id, self.outbox, cfg.mqtt if connect else None, cfg.outbox.batch_size, self.counts,
                             on_command=self._on_command)
        self.uplink = self.syncer.uplink  # the MQTT transport (start/stop/connected), for callers that drive it
        self.commands = CommandHandler(cfg.device_id, self._public_key, self.state.load_position,
                                       self.state.save_position, incarnation=self.outbox.incarnation,
                                       now=self._timeline_now)
        for name, handler in {**AgentCommands(self).handlers(), **self.releases.commands()}.items():
            self.commands.register(name, handler)

    def _use_profile(self, profile: DeviceProfile) -> None:
        """Build what depends on the device's kind: the engine (restored), a collar's night
        watch, the event trace ring and the release handler."""
        self.profile = profile
        self.engine = self.state.engine(profile)
        self.state.restore_profile(profile)
        # a collar's nights (resting HR overnight, restlessness, the day's steps) through the night
        # watch: the morning's verdict travels in the daily summary (``night``)
        self.nights = Nights(self.state.watch()) if profile.kind == "collar" else None
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

    # ---- state (device/agent_state.py) -----------------------------------------------------------
    def save_state(self) -> None:
        """The engine, the sensor clock's timeline, how far a trace got and who this is, saved
        together (one transaction)."""
        held = self.clock.held_first()
        self.state.save(self.engine, self.clock.state(), self.nights.watch if self.nights is not None else None,
                        self.profile, self.position.state(None if held is None else held[0]), self.individual_id)

    def _timeline_now(self) -> float:
        """Now on the agent's timeline (the sensor clock records are dated by, which the cloud's
        command expiry follows), moved on by the wall time since the last frame; the wall clock
        before any frame."""
        if self.clock.last is None:
            return time.time()
        return self.clock.last + max(0.0, time.monotonic() - self._frame_mono)

    def _retry_outbox(self) -> None:
        """An outbox the full disk kept closed at start, once it opens (device/agent_state.py):
        restore the state it kept (a learnt baseline is worth more than the minutes scored
        without it) and send under its incarnation."""
        if not self.state.opened_late():
            return
        if self.syncer.uplink is not None:
            self.syncer.uplink.incarnation = self.outbox.incarnation
        self.commands.incarnation = self.outbox.incarnation  # commands are bound to it
        if self.outbox.get("engine_state"):
            self.engine = self.state.engine(self.profile)
            self.apply_detector_config()
            if self.trace is not None:
                self.trace.reset()
        if self.nights is not None and self.outbox.get("nightwatch_state"):
            self.nights.watch = self.state.watch()
        if not self.individual_id:
            self._learn_individual(self.state.individual_id(), source="saved state")
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
                    self.position.open_from = offset  # this frame opens the next minute: a resume starts here
                    self.process_window(closed)

    def _learn_individual(self, given: str, source: str = "device-info frame") -> None:
        """The individual named by the config, the saved state or the device-info frame, checked
        (a bad name is refused and counted: device/identity.py); the frame of a device that names
        none makes it the device id."""
        if given:
            self.individual_id = checked_individual(given, source, self.cfg.device_id, self.counts) or self.individual_id
        elif source == "device-info frame":
            self.individual_id = self.cfg.device_id

    def process_window(self, w: MinuteWindow) -> None:
        t0 = time.perf_counter()
        self.position.window_ts = w.minute_ts
        accel = w.accel_window(self.releases.window_seconds)
        label = self.releases.classify(accel, float(w.accel_rate), w.minute_ts, self.budget, self.metrics)
        vec = self.profile.vector(w, label)
        if self.nights is not None:
            self.nights.add(w)
        if self.trace is not None:
            self.trace.before_row(w.minute_ts, self.engine.state)
        out = self.engine.process_one(w.minute_ts, vec, reuse=True)
        if self.observer is not None:
            self.observer(w.minute_ts, vec, out)
        if self.trace is not None:
            self.trace.add_row(w.minute_ts, vec)
        for ev in out.events:
            self.records.event(ev, self.releases, self.trace)
        for f in self.profile.findings(w) + self.health.update(w.minute_ts, w.det_unchanged_s, w.battery):
            self.records.finding(f, self.releases)
        if w.minute_ts < self.raw_until and self.budget.allows(SHED_RAW):
            xyz = None if accel is None else tuple((float(x), float(y), float(z))
                                                   for x, y, z in np.round(accel, 3).tolist())
            self.records.append(RawWindow(w.minute_ts, json_floats(vec), self.profile.metrics, label, xyz),
                                w.minute_ts)
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

    # ---- daily summary -----------------------------------------------------------------------
    def _accumulate_day(self, w: MinuteWindow, vec: list[float], label: str | None, out: EngineOutput) -> None:
        day = utc_day(w.minute_ts)
        if self.day is not None and self.day.day != day:
            self.write_summary()
        if self.day is None:
            self.day = self.profile.new_day(day, w.minute_ts)
        self.profile.add_minute(self.day, w, vec, label, out.baseline[0] if out.baseline.size else out.baseline,
                                out.spread[0] if out.spread.size else out.spread)

    def write_summary(self) -> None:
        """Queue the open day's summary (device/day_summary.py) and close the day."""
        d, self.day = self.day, None
        if d is not None:
            self.records.append(day_summary(d, budget=self.budget, ingest=self.ingest_counts(), engine=self.engine,
                                            releases=self.releases, outbox=self.outbox, nights=self.nights), d.ts)

    def ingest_counts(self) -> dict[str, int]:
        return {**self.decoder.stats.as_dict(), **self.minutes.counts, **self.counts}

    # ---- commands ----------------------------------------------------------------------------
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
        self.records.append(CommandReport(cid, ok, detail, to_json(data)), self.clock.last or time.time(),
                            from_window=False)

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
                self.position.resume(self._source, self.decoder)
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
            self.position.open_from = self.decoder.offset
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

