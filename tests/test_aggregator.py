"""The aggregator's message handler, called directly (no broker): store once, ack, decide, refuse."""

from __future__ import annotations

import json

from cloud.aggregator.handler import Aggregator
from cloud.commands import Commander
from cloud.rules.notify import NotificationPolicy
from cloud.store.db import CloudStore
from device.commands import CommandHandler
from shared import schemas, topics
from shared.signing import generate_keypair

T0 = 1767571200.0


def event_body(score: float = 0.9, severity: str = "critical", metrics=("resting_hr", "activity")) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {"start_ts": T0 + 3 * 86400, "ts": T0 + 3 * 86400 + 7200, "metrics": list(metrics),
            "directions": [1, -1][: len(metrics)], "score": score, "severity": severity, "kind": "sustained",
            "baseline": [80.0, 30.0][: len(metrics)], "observed": [95.0, 12.0][: len(metrics)],
            "model_version": "m1", "detector_version": "d1"}


def make(commander: bool = False):  # type: ignore[no-untyped-def]
    sent: list[tuple[str, bytes]] = []
    agg = Aggregator(CloudStore(), NotificationPolicy.from_toml(None), publish=lambda t, p: sent.append((t, p)),
                     sim_clock=True)
    key = None
    if commander:
        key, pub = generate_keypair()
        agg.commander = Commander(agg.store, key, agg.publish, agg.now)  # type: ignore[arg-type]
    return agg, sent, key


def batch(dev: str, *recs: schemas.Record) -> bytes:
    return schemas.encode(schemas.UplinkBatch(dev, tuple(recs)))


def test_store_once_and_ack_every_delivery() -> None:
    agg, sent, _ = make()
    r1 = schemas.Record(1, "summary", T0, "bella", {"day": "2026-01-05"})
    r2 = schemas.Record(2, "event", T0 + 3 * 86400 + 7200, "bella", event_body())
    for _ in range(3):  # redelivered twice
        agg.handle_message(topics.uplink("collar-000"), batch("collar-000", r1, r2))
    assert agg.store.count() == 2 and agg.counts["records_duplicate"] == 4
    acks = [schemas.decode(p) for t, p in sent if t == topics.ack("collar-000")]
    assert len(acks) == 3 and all(a.seqs == (1, 2) for a in acks)  # type: ignore[union-attr]
    assert len(agg.decisions) == 1, "an event is decided once, however often it arrives"
    assert agg.decisions[0].action == "notify"


def test_bad_messages_are_counted_and_nothing_else_is_lost() -> None:
    agg, sent, _ = make()
    good = batch("collar-000", schemas.Record(1, "summary", T0, "bella", {}))
    bad = [
        (topics.uplink("collar-000"), b"not json"),
        (topics.uplink("collar-000"), json.dumps({"v": 9, "type": "batch"}).encode()),
        (topics.uplink("collar-001"), good),  # another device's batch on this topic: spoofing
        (topics.uplink("collar-000"), schemas.encode(schemas.Status("collar-000", "online", T0))),
        ("edgeloop/v1/dev/collar-000/unknown", good),
        ("some/other/topic", good),
        (topics.owner_feedback("bella"), b"{}"),
        (topics.uplink("collar-000"), batch("collar-000", schemas.Record(5, "event", T0, "bella", {"x": 1}))),
    ]
    for topic, payload in bad:
        agg.handle_message(topic, payload)
    agg.handle_message(topics.uplink("collar-000"), good)
    assert agg.counts["rejected"] == len(bad) - 1  # the unreadable event body is stored, not decided
    assert agg.counts["events_unreadable"] == 1 and agg.counts["spoofed"] == 1
    # every bad message leaves a row; the feedback module records its own rejection as well
    assert agg.store.db["rejections"].count == len(bad) + 1
    assert agg.store.count() == 2


def test_collect_more_sends_a_signed_command_the_device_accepts() -> None:
    agg, sent, key = make(commander=True)
    rec = schemas.Record(3, "event", T0 + 3 * 86400 + 7200, "bella",
                         event_body(score=0.55, severity="warning", metrics=("resting_hr",)))
    agg.handle_message(topics.uplink("collar-000"), batch("collar-000", rec))
    assert agg.decisions[0].action == "collect_more", agg.decisions[0]
    cmds = [p for t, p in sent if t == topics.commands("collar-000")]
    assert len(cmds) == 1
    counter = [0]
    dev = CommandHandler("collar-000", key.public_key(), lambda: counter[0],  # type: ignore[union-attr]
                         lambda n: counter.__setitem__(0, n))
    got = []
    dev.register("collect_more", lambda args: got.append(args) or {})
    cid, ok, detail, _ = dev.handle(cmds[0])
    assert ok, detail
    assert got[0]["minutes"] > 0
    assert agg.store.db["commands"].count == 1
