"""The aggregator's message handler, called directly (no broker): store once, ack, decide, refuse."""

from __future__ import annotations

import json
import time

from recs import record_of
from storerows import count

from cloud.aggregator.clock import RecordClock, WallClock
from cloud.aggregator.handler import Aggregator
from cloud.commands import Commander
from cloud.rules.notify import NotificationPolicy
from cloud.store.db import CloudStore
from device.commands import CommandHandler, Position
from shared import schemas, topics
from shared.signing import generate_keypair

T0 = 1767571200.0


def event_body(score: float = 0.9, severity: str = "critical", metrics=("resting_hr", "activity")) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {"start_ts": T0 + 3 * 86400, "ts": T0 + 3 * 86400 + 7200, "metrics": list(metrics),
            "directions": [1, -1][: len(metrics)], "score": score, "severity": severity, "kind": "sustained",
            "baseline": [80.0, 30.0][: len(metrics)], "observed": [95.0, 12.0][: len(metrics)],
            "model_version": "m1", "detector_version": "d1"}


def make(commander: bool = False, store: CloudStore | None = None):  # type: ignore[no-untyped-def]
    sent: list[tuple[str, bytes]] = []
    store, clock = store or CloudStore(), RecordClock()

    def publish(t: str, p: bytes) -> None:
        sent.append((t, p))

    key = cmd = None
    if commander:
        key, pub = generate_keypair()
        cmd = Commander(store, key, publish, clock.now)
    agg = Aggregator(store, NotificationPolicy.from_toml(None), publish=publish, commander=cmd, clock=clock)
    return agg, sent, key


def batch(dev: str, *recs: schemas.Record) -> bytes:
    return schemas.encode(schemas.UplinkBatch(dev, tuple(recs)))


def test_store_once_and_ack_every_delivery(any_store: CloudStore) -> None:
    agg, sent, _ = make(store=any_store)
    r1 = record_of(1, "summary", T0, "bella", {"day": "2026-01-05"})
    r2 = record_of(2, "event", T0 + 3 * 86400 + 7200, "bella", event_body())
    for _ in range(3):  # redelivered twice
        agg.handle_message(topics.uplink("collar-000"), batch("collar-000", r1, r2))
    assert agg.store.count() == 2 and agg.counts["records_duplicate"] == 4
    acks = [schemas.decode(p) for t, p in sent if t == topics.ack("collar-000")]
    assert len(acks) == 3 and all(a.seqs == (1, 2) for a in acks)  # type: ignore[union-attr]
    assert len(agg.decisions) == 1, "an event is decided once, however often it arrives"
    assert agg.decisions[0].action == "notify"


def test_bad_messages_are_counted_and_nothing_else_is_lost(any_store: CloudStore) -> None:
    agg, sent, _ = make(store=any_store)
    good = batch("collar-000", record_of(1, "summary", T0, "bella", {"day": "2026-01-05"}))
    bad = [
        (topics.uplink("collar-000"), b"not json"),
        (topics.uplink("collar-000"), json.dumps({"v": 9, "type": "batch"}).encode()),
        (topics.uplink("collar-001"), good),  # another device's batch on this topic: spoofing
        (topics.uplink("collar-000"), schemas.encode(schemas.Status("collar-000", "online", T0))),
        ("edgeloop/v1/dev/collar-000/unknown", good),
        ("some/other/topic", good),
        (topics.owner_feedback("bella"), b"{}"),
    ]
    for topic, payload in bad:
        agg.handle_message(topic, payload)
    # an event body the rules could not read: now refused as a record, with its reason
    unreadable = json.loads(good)
    unreadable["records"][0].update(seq=5, kind="event", body={"x": 1})
    agg.handle_message(topics.uplink("collar-000"), json.dumps(unreadable).encode())
    agg.handle_message(topics.uplink("collar-000"), good)
    assert agg.counts["rejected"] == len(bad) and agg.counts["spoofed"] == 1
    assert agg.counts["records_rejected"] == 1 and "unknown field(s) ['x']" in str(
        schemas.decode(sent[0][1]).rejected[0].reason)  # type: ignore[union-attr]
    # every bad message leaves one row (the refused feedback too: once, not again by the feedback
    # module, a commit per message under a flood), and the refused record one
    assert count(agg.store, "rejections") == len(bad) + 1
    assert agg.store.count() == 1


def test_collect_more_sends_a_signed_command_the_device_accepts(any_store: CloudStore) -> None:
    agg, sent, key = make(commander=True, store=any_store)
    rec = record_of(3, "event", T0 + 3 * 86400 + 7200, "bella",
                         event_body(score=0.55, severity="warning", metrics=("resting_hr",)))
    agg.handle_message(topics.uplink("collar-000"), batch("collar-000", rec))
    assert agg.decisions[0].action == "collect_more", agg.decisions[0]
    cmds = [p for t, p in sent if t == topics.commands("collar-000")]
    assert len(cmds) == 1
    pos = [Position()]
    dev = CommandHandler("collar-000", key.public_key(), lambda: pos[0],  # type: ignore[union-attr]
                         lambda p: pos.__setitem__(0, p), incarnation="",  # the batch's (a v1 outbox)
                         now=lambda: T0 + 3 * 86400 + 7200)  # the device's timeline: the cloud's sim clock
    got = []
    dev.register("collect_more", lambda args: got.append(args) or {})
    cid, ok, detail, _ = dev.handle(cmds[0])
    assert ok, detail
    assert got[0]["minutes"] > 0
    assert count(agg.store, "commands") == 1


INC_A, INC_B = "a" * 32, "b" * 32


def test_no_decision_on_a_discarded_duplicate(any_store: CloudStore) -> None:
    """A record the insert discarded as a duplicate is acked, never decided: the event body that
    arrived under a stored (device, incarnation, seq) is not the one the cloud keeps."""
    agg, sent, _ = make(store=any_store)
    summary = record_of(5, "summary", T0, "bella", {"day": "2026-01-05"})
    agg.handle_message(topics.uplink("collar-000"), batch("collar-000", summary))
    clash = record_of(5, "event", T0 + 3 * 86400 + 7200, "bella", event_body())
    agg.handle_message(topics.uplink("collar-000"), batch("collar-000", clash))
    assert agg.counts["records_duplicate"] == 1
    assert agg.decisions == [] and count(agg.store, "alerts") == 0, "decided on a discarded record"
    assert agg.store.records()[0]["kind"] == "summary"
    assert [schemas.decode(p).seqs for _, p in sent] == [(5,), (5,)]  # type: ignore[union-attr]


def test_a_new_incarnation_is_a_new_record_and_is_decided(any_store: CloudStore) -> None:
    agg, sent, _ = make(store=any_store)
    ev = record_of(5, "event", T0 + 3 * 86400 + 7200, "bella", event_body())
    for inc in (INC_A, INC_B, INC_A):
        agg.handle_message(topics.uplink("collar-000"),
                           schemas.encode(schemas.UplinkBatch("collar-000", (ev,), inc)))
    assert agg.store.count() == 2 and agg.counts["records_duplicate"] == 1
    assert [d.alert_id for d in agg.decisions] == [f"collar-000:{INC_A}:5", f"collar-000:{INC_B}:5"]
    acks = [schemas.decode(p) for _, p in sent]
    assert [(a.incarnation, a.seqs) for a in acks] == [(INC_A, (5,)), (INC_B, (5,)), (INC_A, (5,))]  # type: ignore[union-attr]
    assert agg.counts["incarnations_new"] == 2
    assert {r["incarnation"] for r in agg.store.backend.query("SELECT incarnation FROM incarnations")} == {INC_A, INC_B}


def test_one_bad_record_is_refused_alone_and_named_in_the_ack(any_store: CloudStore) -> None:
    agg, sent, _ = make(store=any_store)
    good = [record_of(1, "summary", T0, "bella", {"day": "2026-01-05"}),
            record_of(3, "event", T0 + 3 * 86400 + 7200, "bella", event_body())]
    payload = json.loads(schemas.encode(schemas.UplinkBatch("collar-000", tuple(good), INC_A)))
    payload["records"].insert(1, {"seq": 2, "kind": "summary", "ts": T0, "individual_id": "Bella Smith",
                                  "body": {"day": "2026-01-05"}})
    payload["records"].append({"seq": "x"})  # no usable seq: refused, cannot be named
    agg.handle_message(topics.uplink("collar-000"), json.dumps(payload).encode())
    assert agg.store.count() == 2 and len(agg.decisions) == 1
    assert agg.counts["rejected"] == 0 and agg.counts["records_rejected"] == 2
    (ack,) = [schemas.decode(p) for _, p in sent]
    assert isinstance(ack, schemas.Ack) and ack.seqs == (1, 3) and ack.incarnation == INC_A
    assert [r.seq for r in ack.rejected] == [2] and "Bella Smith" in ack.rejected[0].reason
    assert count(agg.store, "rejections") == 2


def test_a_v1_device_keeps_working(any_store: CloudStore) -> None:
    """v1 batches (no incarnation) are stored under incarnation "" and acked in v1."""
    agg, sent, _ = make(store=any_store)
    rec = record_of(1, "event", T0 + 3 * 86400 + 7200, "bella", event_body())
    v1 = json.dumps({"v": 1, "type": "batch", "device_id": "collar-000",
                     "records": [{"seq": 1, "kind": "event", "ts": rec.ts, "individual_id": "bella",
                                  "body": event_body()},
                                 {"seq": 2, "kind": "event", "ts": rec.ts, "individual_id": "bad id",
                                  "body": event_body()}]}).encode()
    agg.handle_message(topics.uplink("collar-000"), v1)
    assert agg.store.records()[0]["incarnation"] == ""
    assert agg.decisions[0].alert_id == "collar-000:1"
    assert json.loads(sent[0][1]) == {"v": 1, "type": "ack", "device_id": "collar-000", "seqs": [1]}


def test_the_record_clock_follows_the_newest_stored_record_and_never_goes_back() -> None:
    agg, _, _ = make()
    assert not agg.clock.started() and agg.now() == 0.0
    agg.handle_message(topics.uplink("collar-000"),
                       batch("collar-000", record_of(2, "summary", T0 + 500, "bella", {"day": "2026-01-05"})))
    agg.handle_message(topics.uplink("collar-000"),
                       batch("collar-000", record_of(1, "summary", T0 + 100, "bella", {"day": "2026-01-04"})))
    assert agg.clock.started() and agg.now() == T0 + 500, "an older record moved the clock back"
    live = Aggregator(CloudStore(), NotificationPolicy.from_toml(None), publish=lambda t, p: None)
    assert isinstance(live.clock, WallClock) and abs(live.now() - time.time()) < 5


def test_a_status_from_a_device_with_a_bad_clock_keeps_its_state_not_its_time() -> None:
    """A status dated year 3000 (or 1970): the device is online (the broker delivered it), so its
    state is kept; its time is not stored, and the refusal is counted and kept with its reason."""
    agg, _, _ = make()
    for i, ts in enumerate((32503680000.0, 1.0)):
        dev = f"collar-00{i}"
        agg.handle_message(topics.status(dev), schemas.encode(schemas.Status(dev, "online", ts)))
        row = agg.store.backend.query("SELECT state, status_ts FROM devices WHERE device_id = ?", [dev])
        assert row == [{"state": "online", "status_ts": None}], row
    agg.flush_rejections()
    reasons = [r["reason"] for r in agg.store.backend.query("SELECT reason FROM rejections ORDER BY id")]
    assert agg.counts["status_ts_refused"] == 2 and len(reasons) == 2 and agg.counts["rejected"] == 0
    assert "days after the cloud's clock" in reasons[0] and "before 2000-01-01" in reasons[1]
    assert all("'online' is kept" in r for r in reasons)
    agg.handle_message(topics.status("collar-000"), schemas.encode(schemas.Status("collar-000", "offline", T0)))
    assert agg.store.backend.query("SELECT state, status_ts FROM devices WHERE device_id = 'collar-000'") == \
        [{"state": "offline", "status_ts": T0}]
