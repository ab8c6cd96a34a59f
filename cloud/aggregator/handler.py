"""Message handling for the aggregator, with no paho in it (tests call it directly).

``handle_message(topic, payload)`` never raises: every bad message is counted, stored in the
``rejections`` table with its reason, and logged; the service keeps serving. In an uplink batch
a bad record is refused alone (named in the ack's ``rejected``, so the device moves it aside);
the batch's other records are stored.

A record is stored once by its identity ``(device_id, incarnation, seq)``; an event is decided in
the same transaction that stored it, and only then: a duplicate is acked, never decided again.
A failure before the commit stores nothing and sends no ack, so the device's resend is new.

A record is refused alone, never decided, when one of its timestamps is not a real time
(cloud/timestamps.py) or its individual is not one its device is bound to (cloud/store/bindings.py).

Uplink batches handled together (``handle_messages``: what queued up while the last group was
handled) are stored and decided in one transaction, with one history read for all their events.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cloud.aggregator.clock import Clock, WallClock
from cloud.feedback import FeedbackError, feedback_from_mqtt, periodic
from cloud.notifiers import Notifier
from cloud.retrain import evaluate_retrain_rules
from cloud.rules.notify import (
    Decision,
    NotificationPolicy,
    Pending,
    RulesError,
    collect_more_command,
    decide_batch,
)
from cloud.store import bindings
from cloud.store.db import CloudStore, StoreResult
from cloud.store.leases import Leases, holder_id
from cloud.timestamps import check_record, implausible
from shared import schemas, topics
from shared.codec import to_json
from shared.records import CommandReport, DailySummary, Event

if TYPE_CHECKING:
    from cloud.aggregator.ports import CommandSender, Rollouts
    from cloud.retrain.config import RetrainConfig

logger = logging.getLogger(__name__)
RECENT_DECISIONS = 1000
Publish = Callable[[str, bytes], None]
PERIODIC_LEASE = "periodic"  # the lease of the reminders, sweeps, personalisation, rollouts, retraining


class Aggregator:
    """Validates, stores once (device id + seq), decides on events, and acks what it stored."""

    def __init__(self, store: CloudStore, policy: NotificationPolicy, publish: Publish | None = None,
                 notifiers: Sequence[Notifier] = (),
                 on_report: Callable[[str, schemas.Record], None] | None = None,
                 commander: CommandSender | None = None, clock: Clock | None = None,
                 rollouts: Rollouts | None = None, retrain: RetrainConfig | None = None,
                 export_dir: str | None = None,
                 binding: bindings.Policy = "first_seen", reject_batch: int = 1,
                 wall: Callable[[], float] = time.time, lease_ttl: float = 15.0,
                 periodic_every: float = 0.0) -> None:
        """``clock``: the rules' time (cloud.aggregator.clock): the wall clock by default; a
        :class:`RecordClock` in replays and simulations, which run days in seconds (record
        timestamps are checked against the wall clock either way). ``commander`` sends commands
        (collect more, personalisation, rollout steps), ``rollouts`` is ticked with the periodic
        work, ``retrain`` rules are evaluated once per (clock) hour, writing datasets under
        ``export_dir``. ``binding``: how a device gets bound to its individuals
        (cloud.store.bindings). ``reject_batch``: rejections are written to the store together,
        every this many (and by ``flush_rejections``, which the service calls every second); 1
        writes each at once. ``wall``: the wall clock of the periodic work's lease (held for
        ``lease_ttl`` s, renewed every tick): one aggregator of those sharing the store runs the
        periodic work, at most every ``periodic_every`` wall seconds (0: every tick)."""
        self.store = store
        self.commander = commander
        self.rollouts = rollouts
        self.retrain = retrain
        self.export_dir = export_dir
        self._retrain_at = 0.0
        self.clock: Clock = clock if clock is not None else WallClock()
        self.policy = policy
        self.publish = publish
        self.notifiers = list(notifiers)
        self.on_report = on_report
        self.counts: Counter[str] = Counter()
        self.decisions: list[Decision] = []  # the latest RECENT_DECISIONS, for tests and debugging
        self._incarnations: set[tuple[str, str]] = set()  # (device_id, incarnation) known to the store
        self.binding = binding
        self.wall = wall
        self.lease_ttl = lease_ttl
        self.holder = holder_id()
        self.periodic_every = periodic_every
        self._periodic_at = 0.0
        self.leases = Leases(store.backend)
        self.reject_batch = max(1, reject_batch)
        self._rejections: list[tuple[float, str, str, int]] = []  # not yet in the store
        self._log_window = (0.0, Counter[str]())  # (second, lines logged in it by kind): log rate limit

    def handle_message(self, topic: str, payload: bytes) -> None:
        try:
            self._dispatch(topic, payload)
        except (schemas.SchemaError, topics.TopicError, RulesError, FeedbackError) as exc:
            self._reject(topic, str(exc), len(payload), _reject_kind(exc))
        except Exception as exc:  # last line of defence: count, log, keep serving
            logger.exception("aggregator.unexpected_error", extra={"topic": topic})
            self._reject(topic, f"internal error {type(exc).__name__}: {exc}", len(payload), "internal")

    def _reject(self, topic: str, reason: str, size: int, kind: str = "schema") -> None:
        self.counts["rejected"] += 1
        self.counts[f"rejected.{kind}"] += 1  # by kind, for the metrics
        if self._may_log(kind):
            logger.warning("aggregator.rejected", extra={"topic": topic[:200], "reason": reason})
        self._keep_rejection(topic, reason, size)

    def _keep_rejection(self, topic: str, reason: str, size: int) -> None:
        self._rejections.append((time.time(), topic[:200], reason[:500], size))
        if len(self._rejections) >= self.reject_batch:
            self.flush_rejections()

    def flush_rejections(self) -> None:
        """Write the rejections kept in memory to the store, in one transaction."""
        if not self._rejections:
            return
        rows, self._rejections = self._rejections, []
        try:
            self.store.reject_many(rows)
        except Exception:  # the store itself failing must not stop the service
            self.counts["reject_unrecorded"] += len(rows)
            logger.exception("aggregator.reject_unrecorded")

    def _may_log(self, kind: str, per_second: int = 10) -> bool:
        """At most ``per_second`` rejection lines per kind per second (a flood is counted, not
        logged line by line); the lines left out are counted in ``rejections_not_logged``."""
        now = int(time.monotonic())
        second, seen = self._log_window
        if second != now:
            self._log_window = (now, seen := Counter())
        seen[kind] += 1
        if seen[kind] > per_second:
            self.counts["rejections_not_logged"] += 1
            return False
        return True

    def handle_messages(self, msgs: Sequence[tuple[str, bytes]]) -> None:
        """Handle several messages (never raises). The uplink batches among them are stored and
        decided in one transaction (group commit) and each is acked after it; if the group fails,
        they are handled one at a time, so a bad message costs only itself."""
        uplinks: list[tuple[str, int, schemas.BatchDecode]] = []
        for topic, payload in msgs:
            try:
                got = self._uplink(topic, payload)
            except (schemas.SchemaError, topics.TopicError) as exc:
                self._reject(topic, str(exc), len(payload), _reject_kind(exc))
                continue
            if got is None:
                self.handle_message(topic, payload)
            else:
                uplinks.append((topic, len(payload), got))
        if len(uplinks) > 1:
            try:
                self._batches([(t, g) for t, _, g in uplinks])
                return
            except Exception:  # one message may be what fails: each alone
                self.counts["group_retried"] += 1
                logger.warning("aggregator.group_retried", exc_info=True, extra={"messages": len(uplinks)})
        for topic, size, got in uplinks:
            try:
                self._batches([(topic, got)])
            except (RulesError, FeedbackError) as exc:
                self._reject(topic, str(exc), size, _reject_kind(exc))
            except Exception as exc:  # last line of defence: count, log, keep serving
                logger.exception("aggregator.unexpected_error", extra={"topic": topic})
                self._reject(topic, f"internal error {type(exc).__name__}: {exc}", size, "internal")

    def _uplink(self, topic: str, payload: bytes) -> schemas.BatchDecode | None:
        """A device's uplink batch, decoded and checked (its refused records counted and kept);
        None for a message of another kind."""
        if topic.startswith(f"{topics.ROOT}/owner/") or topic.split("/")[-1] != "up":
            return None
        device_id = topics.device_id_from_topic(topic)
        try:
            got = schemas.decode_batch(payload)
        except schemas.SchemaError as exc:
            raise schemas.SchemaError(f"{topic}: {exc}") from None
        if got.batch.device_id != device_id:
            self.counts["spoofed"] += 1
            raise schemas.SchemaError(
                f"batch claims device {got.batch.device_id!r} on {device_id!r}'s topic: refused")
        self._refused(topic, got)
        return got

    def _dispatch(self, topic: str, payload: bytes) -> None:
        got = self._uplink(topic, payload)
        if got is not None:
            self._batches([(topic, got)])
            return
        if topic.startswith(f"{topics.ROOT}/owner/"):
            # its refusal is kept (batched) and logged by _reject, not once more by the feedback module
            feedback_from_mqtt(self.store, topic, payload, policy=self.policy, keep_rejection=False)
            self.counts["feedback"] += 1
            return
        device_id = topics.device_id_from_topic(topic)
        msg = schemas.decode(payload)
        if topic.split("/")[-1] == "status":
            if not isinstance(msg, schemas.Status) or msg.device_id != device_id:
                raise schemas.SchemaError(f"{topic}: expected a status of {device_id!r}")
            bad_ts = implausible(msg.ts)
            if bad_ts is not None:  # the state is true (the broker delivered it); its time is not kept
                self.counts["status_ts_refused"] += 1
                self._keep_rejection(topic, f"status {bad_ts}; its state {msg.state!r} is kept, its time is not",
                                     len(payload))
            self.store.set_device_state(device_id, msg.state, None if bad_ts else msg.ts, msg.incarnation)
            if msg.incarnation:  # known before its first batch: commands are bound to it
                self._note_incarnation(device_id, msg.incarnation, 0)
            self.counts["status"] += 1
        else:
            raise topics.TopicError(f"topic {topic!r} is not one the cloud consumes")

    def _refused(self, topic: str, got: schemas.BatchDecode) -> None:
        """Count, keep and log the records refused out of a batch (the rest goes on)."""
        for reason in (*(f"seq {r.seq}: {r.reason}" for r in got.rejected), *got.unidentified):
            self._record_refused(topic, got.batch, reason, "schema")

    def _record_refused(self, topic: str, batch: schemas.UplinkBatch, reason: str, kind: str) -> None:
        self.counts["records_rejected"] += 1
        if kind != "schema":  # a record's schema refusals are counted as records_rejected only
            self.counts[f"rejected.{kind}"] += 1
        if self._may_log(f"record.{kind}"):
            logger.warning("aggregator.record_rejected", extra={
                "device_id": batch.device_id, "incarnation": batch.incarnation, "kind": kind, "reason": reason})
        self._keep_rejection(topic, reason, 0)

    def _timely(self, topic: str, batch: schemas.UplinkBatch) -> tuple[schemas.UplinkBatch, list[schemas.Rejection]]:
        """The batch without its records whose timestamps are not real times (each refused alone)."""
        now = time.time()
        keep, refused = [], []
        for r in batch.records:
            reason = check_record(r.ts, r.body, now)
            if reason is None:
                keep.append(r)
            else:
                refused.append(schemas.Rejection(r.seq, reason[:schemas.MAX_REASON_CHARS]))
                self._record_refused(topic, batch, f"seq {r.seq}: {reason}", "timestamp")
        return replace(batch, records=tuple(keep)), refused

    def _bound(self, topic: str, batch: schemas.UplinkBatch, repo: bindings.BindingRepository,
               known: dict[str, set[str]], ctx: bindings.ClaimContext
               ) -> tuple[schemas.UplinkBatch, list[schemas.Rejection]]:
        """The batch without its records for individuals the device is not bound to (inside the
        group's transaction: a first-seen binding commits with the records). ``known``: the
        group's devices' bindings, read once (updated as first-seen ones are bound); ``ctx``: the
        group's claims, read once."""
        verdict = repo.admit(batch.device_id, (r.individual_id for r in batch.records), self.binding,
                             bound=known[batch.device_id], ctx=ctx)
        for ind in verdict.bound_now:
            logger.info("aggregator.bound", extra={"device_id": batch.device_id, "individual_id": ind,
                                                   "source": "first_seen"})
        if not verdict.refused:
            return batch, []
        keep, refused = [], []
        for r in batch.records:
            reason = verdict.reason(r.individual_id)
            if reason is None:
                keep.append(r)
            else:
                refused.append(schemas.Rejection(r.seq, reason[:schemas.MAX_REASON_CHARS]))
                self._record_refused(topic, batch, f"seq {r.seq}: {reason}", "binding")
        for ind, reason in verdict.refused.items():
            n = sum(r.individual_id == ind for r in batch.records)
            repo.note_refused(batch.device_id, ind, reason, n)
        return replace(batch, records=tuple(keep)), refused

    def _note_incarnation(self, device_id: str, incarnation: str, first_seq: int) -> None:
        """A device's incarnation from its status (before its first batch); logged when new."""
        key = (device_id, incarnation)
        if key in self._incarnations:
            return
        before = self.store.note_incarnation(device_id, incarnation, first_seq)
        self._incarnations.add(key)
        if before is not None:
            self._new_incarnation(key, before)

    def _new_incarnation(self, key: tuple[str, str], before: int) -> None:
        self.counts["incarnations_new"] += 1
        # a device seen before with another incarnation had its storage reset (or is a clone)
        log = logger.warning if before else logger.info
        log("aggregator.new_incarnation", extra={"device_id": key[0], "incarnation": key[1], "previous": before})

    def _batches(self, gots: Sequence[tuple[str, schemas.BatchDecode]]) -> None:
        """Store the batches' records and decide their new events in one transaction (stored and
        decided together, or neither), then act on the decisions, count and ack each batch."""
        timely = [self._timely(topic, g.batch) for topic, g in gots]
        with self.store.backend.transaction():
            unknown = {(b.device_id, b.incarnation): min(r.seq for r in b.records) for b, _ in timely
                       if b.records and (b.device_id, b.incarnation) not in self._incarnations}
            new = self.store.note_incarnations([(d, i, s) for (d, i), s in unknown.items()])
            repo = bindings.BindingRepository(self.store.backend)
            known = repo.bound_many(b.device_id for b, _ in timely)
            ctx = repo.claim_context(((b.device_id, (r.individual_id for r in b.records)) for b, _ in timely), known)
            bound = [self._bound(topic, b, repo, known, ctx) for (topic, _), (b, _) in zip(gots, timely, strict=True)]
            repo.bind_pending(ctx)
            batches = [b for b, _ in bound]
            # PostgreSQL: aggregators deciding for one individual at once queue (its incidents and
            # cooldowns); SQLite's write lock already holds the whole database
            self.store.backend.lock_keys({r.individual_id for b in batches for r in b.records
                                          if isinstance(r.body, Event)})
            results = self.store.store_many(batches)
            # a decision only ever follows this insert: never a duplicate
            pending = [Pending(b.device_id, r, b.incarnation) for b, res in zip(batches, results, strict=True)
                       for r in res.new if isinstance(r.body, Event)]
            decisions = {(d.device_id, d.incarnation, d.seq): d for d in self._decide(pending)}
        self._incarnations.update(unknown)
        for key, before in new.items():
            self._new_incarnation(key, before)
        for res in results:  # a record clock moves before acting: a command's expiry counts from this batch
            if res.new:
                self.clock.observe(max(rec.ts for rec in res.new))
        if decisions:
            with self.store.backend.transaction():  # the notifiers' records of the group in one transaction
                for b, res in zip(batches, results, strict=True):
                    for rec in res.new:
                        d = decisions.get((b.device_id, b.incarnation, rec.seq))
                        if d is not None and isinstance(rec.body, Event):
                            self._act(d, rec.body)
        for (_, got), (_, late), (batch, unbound), res in zip(gots, timely, bound, results, strict=True):
            self._after(batch, res, (*got.rejected, *late, *unbound))

    def _after(self, batch: schemas.UplinkBatch, result: StoreResult,
               rejected: tuple[schemas.Rejection, ...]) -> None:
        """After the commit (and the decisions acted on): count, hand on reports and summaries, ack."""
        self.counts["records_new"] += len(result.new)
        self.counts["records_duplicate"] += result.duplicates
        for rec in result.new:
            if isinstance(rec.body, CommandReport):
                self._report(batch.device_id, rec, rec.body)
            elif isinstance(rec.body, DailySummary) and self.rollouts is not None:
                self.rollouts.on_summary(batch.device_id, to_json(rec.body), self.now())
        if self.publish is not None:  # ack everything stored, duplicates included (their ack was lost)
            seqs = tuple(r.seq for r in batch.records)
            if batch.v >= 2:
                ack = schemas.Ack(batch.device_id, seqs, batch.incarnation, rejected)
            else:  # a v1 device cannot be told of refusals: it resends them (refused again)
                ack = schemas.Ack(batch.device_id, seqs, v=1)
            self.publish(topics.ack(batch.device_id), schemas.encode(ack))

    def _decide(self, pending: list[Pending]) -> list[Decision]:
        """New events decided together (one history read, one write)."""
        try:
            return decide_batch(self.store, self.policy, pending)
        except RulesError as exc:
            self.counts["events_unreadable"] += len(pending)
            logger.warning("aggregator.event_unreadable", extra={"reason": str(exc)})
            return []

    def _act(self, decision: Decision, ev: Event) -> None:
        """After the commit: count the decision and do what it says (notify, collect more)."""
        self.counts["decision." + decision.action] += 1
        self.decisions.append(decision)
        if len(self.decisions) > RECENT_DECISIONS:  # bounded: the store keeps them all
            del self.decisions[:-RECENT_DECISIONS]
        if decision.action == "notify":
            body = to_json(ev)
            for n in self.notifiers:
                n.send(decision, body)
        elif decision.action == "collect_more" and self.commander is not None:
            dev, name, args = collect_more_command(self.policy, decision, metrics=list(ev.metrics))
            self.commander.send(dev, name, args, reason=f"{decision.rule}: {decision.reason}")

    def _report(self, device_id: str, rec: schemas.Record, report: CommandReport) -> None:
        """A command's result from the device: hand it to the rollout (if it is one of its steps)."""
        self.counts["reports.ok" if report.ok else "reports.failed"] += 1
        if self.commander is not None and self.commander.on_report(device_id, report) is not None:
            self.counts["commands.resync"] += 1  # the device refused a fresh command: our counter went back
        if self.rollouts is not None:
            reply = schemas.Reply(device_id, report.command_id, report.ok, report.detail, dict(report.data))
            self.rollouts.handle_reply(reply, self.now())
        if self.on_report is not None:
            self.on_report(device_id, rec)

    def _send_rollout_actions(self) -> None:
        if self.rollouts is None or self.commander is None:
            return
        for a in self.rollouts.tick(self.now()):
            args = dict(a.args)
            path = args.pop("bundle_path", None)
            if a.command_name == "install_shadow" and path:
                args["bundle_b64"] = base64.b64encode(Path(path).read_bytes()).decode()
            self.commander.send(a.device_id, a.command_name, args, reason=f"rollout {args.get('rollout_id')}",
                                command_id=a.command_id)
            self.counts["commands." + a.command_name] += 1

    def now(self) -> float:
        return self.clock.now()

    def release_leases(self) -> None:
        """A clean stop: the next aggregator takes the periodic work at once."""
        try:
            self.leases.release(PERIODIC_LEASE, self.holder)
        except Exception:  # stopping must go on
            logger.exception("aggregator.lease_release_failed")

    def tick(self) -> None:
        """Timed work (reminders, deferred notifications, ignore sweep, personalisation commands)."""
        for n in self.notifiers:  # notifiers with their own timed work (delivery outcomes, retries)
            pump = getattr(n, "tick", None)
            if pump is not None:
                try:
                    pump()
                except Exception:
                    self.counts["tick_failed"] += 1
                    logger.exception("aggregator.notifier_tick_failed")
        if not self.clock.started():  # a record clock before the first record: no time yet
            return
        if self.periodic_every and self.wall() - self._periodic_at < self.periodic_every:
            return
        self._periodic_at = self.wall()
        try:
            # once across the aggregators sharing this store: the lease holder does it
            if not self.leases.hold(PERIODIC_LEASE, self.holder, self.lease_ttl, self.wall()):
                self.counts["periodic_elsewhere"] += 1
                return
            self.counts["periodic_runs"] += 1
            result = periodic(self.store, self.policy, self.now(), self.notifiers)
            for dev, name, args in result.commands:
                if self.commander is not None:
                    self.commander.send(dev, name, args, reason="personalisation")
                    self.counts["commands." + name] += 1
            if self.rollouts is not None and self.commander is not None:
                self._send_rollout_actions()
            if self.retrain is not None and self.now() - self._retrain_at >= 3600.0:
                self._retrain_at = self.now()
                for req in evaluate_retrain_rules(self.store, self.retrain, self.now(), export_dir=self.export_dir):
                    self.counts["retrain_requests"] += 1
                    logger.warning("aggregator.retrain_requested", extra={"request": str(req)})
        except Exception:  # timed work failing must not stop message handling
            self.counts["tick_failed"] += 1
            logger.exception("aggregator.tick_failed")



def _reject_kind(exc: Exception) -> str:
    """A bounded label for a rejection (the metrics' reason)."""
    for cls, kind in ((FeedbackError, "feedback"), (RulesError, "rules"), (topics.TopicError, "topic")):
        if isinstance(exc, cls):
            return kind
    return "schema"
