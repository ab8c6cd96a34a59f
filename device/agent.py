"""The device agent: source bytes -> frames -> minute windows -> engine -> SQLite outbox -> MQTT.

One thread does all the work (reading, scoring, SQLite); paho's network thread only reports
into a queue (device/sync.py). Bad frames, bad payloads and bad commands are counted and logged,
never raised: the agent keeps serving.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from device.budget import SHED_RAW, SHED_SHADOW, LatencyBudget
from device.commands import CommandHandler
from device.config import AgentConfig
from device.detect.detector_config import engine_config
from device.detect.engine import DeviationEvent, Engine
from device.features.daily import DayAccumulator, json_floats
from device.features.metrics import CollarMetrics, PerceptionMetrics
from device.features.minute import MinuteAggregator, MinuteWindow
from device.inference.slots import ModelSlots, ShadowStats
from device.kernels.loader import kernels
from device.metrics_sink import NULL_SINK, MetricsSink
from device.outbox import BufferFullError, Outbox
from device.reader import ByteSource, open_source
from device.sync import Uplink
from device.trace import TraceRing
from shared import schemas, topics
from shared.alert_gate import GATE_KEYS, AlertGate, event_numbers
from shared.frames import Frame, FrameDecoder
from shared.payloads import DeviceInfo, PayloadError, decode_payload
from shared.topics import TopicError, check_id

logger = logging.getLogger(__name__)
AGENT_VERSION = "0.1.0"
BACKWARD_JUMP_S = 60.0  # a frame this far behind the previous one is a clock jump, not jitter
MAX_BATCH_BYTES = 192 * 1024  # below the cloud's 256 KiB message cap, with room for the envelope
TRACE_MAX_BYTES = 64 * 1024  # an event's trace: half the outbox's 128 KiB row cap
FORWARD_JUMP_S = 1800.0  # a frame this far ahead of the previous one: a gap or a clock jump
STATE_EVERY_S = 3600.0  # persist engine state once per device hour ...
STATE_MIN_WALL_S = 30.0  # ... but not more often than this in wall time (replays run days in seconds)


def _utc_day(ts: float) -> str:
    """UTC day of a timestamp (called once per window; the formatting is cached per day)."""
    return _day_name(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def _day_name(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


class Agent:
    """One agent per device. ``run()`` until the source ends (exit_on_eof) or ``stop`` is set."""

    def __init__(self, cfg: AgentConfig, *, classifier: Any = "factory", connect: bool = True) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ob = cfg.outbox
        self.outbox = Outbox(ob.path or self.state_dir / "outbox.db", ob.max_bytes, ob.resend_after, ob.raw_ttl)
        self.counts: Counter[str] = Counter()
        self.decoder = FrameDecoder()
        self.minutes = MinuteAggregator()
        self.features = CollarMetrics(cfg.quiet_minutes, score_rest=cfg.score_rest) if cfg.kind == "collar" else PerceptionMetrics()
        # configured, else learnt from the device-info frame (kept across restarts)
        self.individual_id = ""
        self._learn_individual(cfg.individual_id or (self.outbox.get("individual_id") or b"").decode(),
                               source="saved state")
        public_key = _load_public_key(cfg.cloud_public_key)
        # signed model releases need the cloud's key; without it the shipped model runs alone
        self.slots = (ModelSlots(self.state_dir, public_key, device_class=cfg.kind, agent_version=AGENT_VERSION)
                      if public_key is not None and cfg.kind == "collar" and classifier == "factory" else None)
        if self.slots is not None:
            self.classifier: Any = self.slots.active_classifier()
        else:
            self.classifier = _load_classifier(classifier) if cfg.kind == "collar" else None
        self.model_version = getattr(self.classifier, "sha256", "none")[:12]
        self.shadow: Any = None  # a shadow model outside slots (tests); slots keep their own
        self.shadow_stats = ShadowStats()
        self.budget = LatencyBudget(cfg.budget_ms)
        self.metrics: MetricsSink = NULL_SINK  # edgeloop agent --metrics installs a Prometheus sink
        # called with (minute_ts, feature vector, engine output) after each window (replay plots);
        # the output's arrays are the engine's buffers: copy what you keep
        self.observer: Callable[[float, list[float], Any], None] | None = None
        self.engine = self._restore_engine()
        self.trace = (TraceRing(tuple(self.features.metrics), cfg.event_trace_hours * 3600.0)
                      if cfg.event_trace_hours > 0 else None)
        self.gate: Any = None
        self._apply_detector_config()
        self.raw_until = 0.0
        self.end_of_stream = False
        self.clock_offset = 0.0
        self._last_ts: float | None = None
        self._last_state_ts = -math.inf
        self._last_state_wall = -math.inf
        self.day: DayAccumulator | None = None
        self._source: ByteSource | None = None
        self.uplink = Uplink(cfg.mqtt, cfg.device_id, incarnation=self.outbox.incarnation) if connect else None
        self.commands = CommandHandler(cfg.device_id, public_key, self._load_counter, self._save_counter)
        self.commands.register("config", self._cmd_config)
        self.commands.register("collect_more", self._cmd_collect_more)
        self.commands.register("install_shadow", self._cmd_install_shadow)
        self.commands.register("promote", self._cmd_promote)
        self.commands.register("rollback", self._cmd_rollback)

    # ---- state ---------------------------------------------------------------------------------
    def _restore_engine(self) -> Engine:
        m, d = self.features.metrics, self.features.directions
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

    def save_state(self) -> None:
        self.outbox.put_many({"engine_state": self.engine.state(),
                              "engine_metrics": json.dumps(list(self.engine.metrics)).encode()})
        if self.individual_id:
            self.outbox.put("individual_id", self.individual_id.encode())

    def _load_counter(self) -> int:
        v = self.outbox.get("command_counter")
        return int(v.decode()) if v else 0

    def _save_counter(self, n: int) -> None:
        self.outbox.put("command_counter", str(n).encode())

    # ---- input -----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Decode bytes and process every completed frame."""
        self._frames(self.decoder.feed(data))

    def _frames(self, frames: list[Frame]) -> None:
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
                if not self.individual_id:
                    self._learn_individual(reading.info.get("individual_id", ""))
                continue
            ts = frame.ts_ms / 1000.0 + self.clock_offset
            if self._last_ts is not None and ts < self._last_ts - BACKWARD_JUMP_S:
                # the device clock went back: keep our timeline monotonic and flag it
                self.counts["clock_jump_back"] += 1
                self.clock_offset += self._last_ts - ts
                ts = self._last_ts
                logger.warning("ingest.clock_jump", extra={"device_id": self.cfg.device_id})
            elif self._last_ts is not None and ts > self._last_ts + FORWARD_JUMP_S:
                # a gap or a forward clock jump: the two look alike from here; flagged either way
                self.counts["gap_or_clock_jump_forward"] += 1
            self._last_ts = max(ts, self._last_ts or ts)
            closed = self.minutes.add(ts, reading)
            if closed is not None:
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
        label = None
        accel = w.accel_window(getattr(self.classifier, "window_seconds", 4.0))
        if self.classifier is not None and accel is not None and len(accel) >= 8:
            try:
                t_inf = time.perf_counter()
                pred = self.classifier.predict(accel, float(w.accel_rate))
                self.metrics.inference(time.perf_counter() - t_inf)
                label = pred.label
                shadow = self.shadow or (self.slots.shadow_classifier() if self.slots else None)
                if shadow is not None and self.budget.allows(SHED_SHADOW):
                    self.shadow_stats.record(w.minute_ts, pred, shadow.predict(accel, float(w.accel_rate)))
            except ValueError as exc:
                self.counts["window_unclassifiable"] += 1
                logger.debug("features.unclassifiable", extra={"reason": str(exc)})
        vec = self.features.vector(w, label)
        if self.trace is not None:
            self.trace.before_row(w.minute_ts, self.engine.state)
        out = self.engine.process_one(w.minute_ts, vec, reuse=True)
        if self.observer is not None:
            self.observer(w.minute_ts, vec, out)
        if self.trace is not None:
            self.trace.add_row(w.minute_ts, vec)
        for ev in out.events:
            self._emit_event(ev)
        if w.minute_ts < self.raw_until and self.budget.allows(SHED_RAW):
            self._append("raw", w.minute_ts, {"minute_ts": w.minute_ts, "metrics": json_floats(vec),
                                               "names": list(self.features.metrics),
                                               "label": label, "accel": None if accel is None else
                                               np.round(accel, 3).tolist()})
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
        body = asdict(ev)
        body.update(metrics=list(ev.metrics), directions=list(ev.directions), baseline=json_floats(ev.baseline),
                    observed=json_floats(ev.observed), model_version=self.model_version,
                    detector_version=self.detector_version)
        if self.gate is not None and not self.gate.alerts(event_numbers(None, body)):
            self.counts["events_below_gate"] += 1  # the active release's gate holds it on the device
            return
        trace = self._event_trace()
        if trace is not None:
            body["trace"] = trace
        self._append("event", ev.ts, body)
        self.counts["events"] += 1
        logger.info("agent.event", extra={"device_id": self.cfg.device_id, "metrics": ev.metrics})

    def _event_trace(self) -> dict[str, Any] | None:
        """The longest trace that keeps the event row well inside the outbox's row cap (a long
        ``event_trace_hours`` with many metrics is cut at a later snapshot); None if none fits."""
        if self.trace is None:
            return None
        for start in range(self.trace.snapshots):
            tr = self.trace.export(start)
            if tr is not None and len(json.dumps(tr, separators=(",", ":"))) <= TRACE_MAX_BYTES:
                if start:
                    self.counts["event_trace_shortened"] += 1
                return tr
        self.counts["event_trace_dropped"] += 1
        return None

    def _append(self, kind: str, ts: float, body: dict[str, Any]) -> None:
        try:
            self.outbox.append(kind, self.individual_id or self.cfg.device_id, ts, body)
        except BufferFullError as exc:  # bytes bound or disk full, with nothing left to evict
            self.counts["outbox_refused"] += 1
            logger.error("outbox.refused", extra={"reason": str(exc), "kind": kind})

    # ---- daily summary -----------------------------------------------------------------------
    def _accumulate_day(self, w: MinuteWindow, vec: list[float], label: str | None, out: Any) -> None:
        day = _utc_day(w.minute_ts)
        if self.day is not None and self.day.day != day:
            self.write_summary()
        if self.day is None:
            self.day = DayAccumulator(day, w.minute_ts, tuple(self.features.metrics),
                                      track_rest=isinstance(self.features, CollarMetrics))
        collar = self.features if isinstance(self.features, CollarMetrics) else None
        self.day.add(w.minute_ts, np.asarray(vec, dtype=np.float64), w.steps, label, w.temp, w.battery,
                     out.baseline[0] if out.baseline.size else out.baseline,
                     out.spread[0] if out.spread.size else out.spread,
                     rest=collar is not None and collar.rest.still,
                     rest_closed=collar.rest.closed if collar is not None else ())

    def write_summary(self) -> None:
        d, self.day = self.day, None
        if d is None:
            return
        body = d.body()
        body.update({
            "latency": self.budget.report(), "ingest": self.ingest_counts(),
            "warming_up": self.engine.warming_up, "model_version": self.model_version,
            "detector_version": self.detector_version, "agent_version": AGENT_VERSION,
            "shadow": self.shadow_stats.summary() if self.shadow_stats.total else {},
            "models": self.slots.status() if self.slots else None, "outbox": self.outbox.counters(),
            # what still waits for the cloud's ack (the fleet page shows it beside the battery)
            "backlog": {"rows": self.outbox.pending_count(), "bytes": self.outbox.bytes_used},
        })
        self._append("summary", d.ts, body)

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
        self.raw_until = max(self.raw_until, (self._last_ts or time.time()) + minutes * 60.0)
        return {"raw_until": self.raw_until}

    def _need_slots(self) -> ModelSlots:
        if self.slots is None:
            raise ValueError("model releases need cloud_public_key (and a collar agent with its factory model)")
        return self.slots

    def _use_active(self) -> dict[str, Any]:
        slots = self._need_slots()
        self.classifier = slots.active_classifier()
        self.model_version = self.classifier.sha256[:12]
        self.shadow_stats.reset()
        self._apply_detector_config()
        return {"model_version": self.model_version, "detector_version": self.detector_version,
                "models": slots.status()}

    def _apply_detector_config(self, cfg: Mapping[str, Any] | None = None) -> None:
        """A release's detector config (``detector.json`` in the signed bundle; default: the
        active slot's) takes effect here: engine keys (EngineConfig fields) rebuild the engine from
        its own state, so nothing is relearnt; alert-gate keys (min_score, metric_thresholds, ...)
        filter events before they are queued, with the same semantics the cloud's release check
        replays."""
        if cfg is None:
            cfg = self.slots.detector_config("active") if self.slots is not None else {}
        try:
            new = engine_config(cfg)
            gate = AlertGate.from_config(cfg) if any(k in cfg for k in GATE_KEYS) else None
        except (ValueError, TypeError) as exc:  # signed but unusable: keep what runs, say so
            self.counts["detector_config_rejected"] += 1
            logger.error("agent.detector_config_rejected", extra={"reason": str(exc)})
            cfg, new, gate = {}, self.engine.config, None
        if new != self.engine.config:
            self.engine = Engine.from_state(self.engine.state(), self.features.metrics, config=new,
                                            directions=self.features.directions)
            if self.trace is not None:
                self.trace.reset()
        self.gate = gate
        self.detector_version = hashlib.sha256(
            json.dumps(cfg, sort_keys=True).encode() + repr(self.engine.config).encode()).hexdigest()[:12]

    def _cmd_install_shadow(self, args: dict[str, Any]) -> dict[str, Any]:
        slots = self._need_slots()
        data = base64.b64decode(str(args.get("bundle_b64", "")), validate=True)
        if not data:
            raise ValueError("install_shadow needs bundle_b64 (the signed bundle)")
        m = slots.install_shadow(data)
        if args.get("sha256") and args["sha256"] != m.sha256:
            slots.discard_shadow()
            raise ValueError(f"bundle model sha256 {m.sha256[:12]} is not the announced {str(args['sha256'])[:12]}")
        self.shadow_stats.reset()
        return {"installed": m.name, "version": m.version, "models": slots.status()}

    def _cmd_promote(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_slots().promote()
        return self._use_active()

    def _cmd_rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        """Undo a release. With ``name``/``version`` only the slot holding that release is touched
        (active: restore the previous model; shadow: discard it; neither: nothing to undo), so a
        rollback sent to a device whose install never happened cannot downgrade it."""
        slots = self._need_slots()
        if "version" in args:
            want = (str(args.get("name", "")), str(args["version"]))

            def holds(role: str) -> bool:
                m = slots.manifest(role)
                return m is not None and (m.name, str(m.version)) == want

            if holds("active"):
                slots.rollback()
            elif holds("shadow"):
                slots.discard_shadow()
            else:
                return {**self._use_active(), "undone": None}
        elif args.get("promoted", True):
            slots.rollback()
        else:
            slots.discard_shadow()
        return self._use_active()

    def _on_command(self, payload: bytes) -> None:
        cid, ok, detail, data = self.commands.handle(payload)
        self._append("report", self._last_ts or time.time(),
                     {"command_id": cid, "ok": ok, "detail": detail, "data": data})

    # ---- sync ------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Handle network events and publish due outbox rows."""
        if self.uplink is None:
            return
        for ev in self.uplink.poll():
            if ev.kind == "puback":
                seqs = self.uplink.inflight.pop(ev.mid, [])
                if ev.ok:
                    self.outbox.mark_published(seqs)
                else:
                    self.counts["publish_refused"] += 1
                    logger.warning("sync.publish_refused", extra={"reason": ev.detail})
            elif ev.kind == "message":
                self._on_message(ev.topic, ev.payload)
            elif ev.kind == "connected":
                self.outbox.unmark_published()  # sync.connected is logged by the uplink
        while self.uplink.can_send():
            busy = {s for seqs in self.uplink.inflight.values() for s in seqs}
            rows = [r for r in self.outbox.due(self.cfg.outbox.batch_size * 4) if r.seq not in busy]
            rows = _fit_batch(rows, self.cfg.outbox.batch_size, MAX_BATCH_BYTES)
            if not rows or self.uplink.send(rows) is None:
                break

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == topics.ack(self.cfg.device_id):
            try:
                msg = schemas.decode(payload)
                if not isinstance(msg, schemas.Ack) or msg.device_id != self.cfg.device_id:
                    raise schemas.SchemaError("not an ack for this device")
            except schemas.SchemaError as exc:
                self.counts["ack_rejected"] += 1
                logger.warning("sync.ack_rejected", extra={"reason": str(exc)})
                return
            self._on_ack(msg)
        elif topic == topics.commands(self.cfg.device_id):
            self._on_command(payload)
        else:
            self.counts["unexpected_topic"] += 1

    def _on_ack(self, msg: schemas.Ack) -> None:
        """Forget what the cloud stored; move aside what it refused for good. An ack for another
        incarnation (this device before a reset) says nothing about these rows."""
        if msg.incarnation != self.outbox.incarnation:
            self.counts["ack_other_incarnation"] += 1
            logger.warning("sync.ack_other_incarnation", extra={"device_id": self.cfg.device_id,
                                                                "incarnation": msg.incarnation})
            return
        self.outbox.ack(list(msg.seqs))
        if msg.rejected:
            moved = self.outbox.reject((r.seq, r.reason) for r in msg.rejected)
            for r in moved:
                logger.error("sync.record_rejected", extra={
                    "device_id": self.cfg.device_id, "seq": r.seq, "kind": r.kind, "reason": r.reason})

    def source_backlog(self) -> int:
        return self._source.backlog() if self._source is not None else 0

    # ---- main loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, source: ByteSource | None = None) -> dict[str, Any]:
        stop = stop or threading.Event()
        if source is None and not self.cfg.source:
            raise ValueError("no source: set source (serial port, pyserial URL or trace file)")
        self._source = source or open_source(self.cfg.source, self.cfg.baudrate)
        if self.uplink:
            self.uplink.start()
        last_expire = time.monotonic()
        try:
            while not stop.is_set():
                data = self._source.read()
                if data:
                    self.feed(data)
                self.pump()
                if time.monotonic() - last_expire > 60.0:
                    self.outbox.expire()
                    last_expire = time.monotonic()
                if self._source.eof or self.end_of_stream:
                    if self.cfg.exit_on_eof:
                        break
                    time.sleep(0.1)
            self.finish()
            self.drain(stop)
        finally:
            self.save_state()
            if self.uplink:
                self.uplink.stop()
            self._source.close()
        return self.report()

    def finish(self) -> None:
        """End of input: close the open window and write the partial day's summary."""
        self._frames(self.decoder.flush())
        w = self.minutes.flush()
        if w is not None:
            self.process_window(w)
        self.write_summary()
        self.save_state()

    def drain(self, stop: threading.Event) -> None:
        """Wait (bounded) until the cloud acknowledged every row."""
        if self.uplink is None:
            return
        deadline = time.monotonic() + self.cfg.drain_timeout
        while self.outbox.pending_count() and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.02)

    def report(self) -> dict[str, Any]:
        rejected = {"count": self.outbox.rejected_count(),
                    "latest": [asdict(r) for r in self.outbox.rejected_rows(5)]}
        return {"device_id": self.cfg.device_id, "individual_id": self.individual_id,
                "incarnation": self.outbox.incarnation,
                "pending": self.outbox.pending_count(), "rejected": rejected, "outbox": self.outbox.counters(),
                "ingest": self.ingest_counts(), "latency": self.budget.report(),
                "commands": dict(self.commands.counts), "kernels": kernels().info()}


def _fit_batch(rows: list[Any], max_rows: int, max_bytes: int) -> list[Any]:
    """The leading rows that fit one MQTT message (always at least one: rows are capped smaller)."""
    out, total = [], 0
    for r in rows[:max_rows]:
        if out and total + r.size > max_bytes:
            break
        out.append(r)
        total += r.size
    return out


def _load_classifier(spec: Any) -> Any:
    if spec != "factory":
        return spec
    try:
        from device.inference.classifier import factory_classifier

        return factory_classifier()
    except (OSError, ImportError, RuntimeError, KeyError, json.JSONDecodeError) as exc:
        logger.warning("agent.no_model", extra={"reason": str(exc)})
        return None


def _load_public_key(path: str) -> Any:
    if not path:
        return None
    from shared.signing import load_public_key

    return load_public_key(Path(path))
