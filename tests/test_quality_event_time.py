"""Alerts replayed from an old trace are judged on the trace's clock: not swept to 'ignored' the
moment they are decided (they were, before: 100 % ignored in `edgeloop quality` before any
feedback), swept once the owner has had ignore_after_s to answer; live collars are unchanged, and
time to act puts the owner's wall-clock answer on the event's time axis. On both store back ends."""

from __future__ import annotations

import time

from recs import record_of
from test_aggregator import event_body

from cloud.aggregator.handler import Aggregator
from cloud.feedback import record_feedback
from cloud.feedback.clock import data_clock_offsets
from cloud.quality import quality_by_model_version
from cloud.rules.notify import NotificationPolicy
from cloud.store.db import CloudStore
from shared import schemas, topics
from shared.schemas import Feedback

OLD = 1767571200.0  # January 2026: a recorded trace


def _event(agg: Aggregator, dev: str, ind: str, seq: int, ts: float) -> None:
    body = {**event_body(), "start_ts": ts - 7200, "ts": ts}
    agg.handle_message(topics.uplink(dev), schemas.encode(schemas.UplinkBatch(dev, (record_of(seq, "event", ts, ind, body),))))


def _states(store: CloudStore) -> dict[str, str]:
    return {r["individual_id"]: r["state"] for r in store.backend.query("SELECT individual_id, state FROM alerts")}


def test_replayed_alerts_are_not_swept_at_once_and_live_ones_are(any_store: CloudStore) -> None:
    agg = Aggregator(any_store, NotificationPolicy.from_toml(None), publish=lambda t, p: None)
    after = agg.policy.settings.ignore_after_s
    now = time.time()
    _event(agg, "collar-000", "bella", 1, OLD + 3 * 86400)          # replayed from a trace
    _event(agg, "collar-001", "max", 1, now - after - 600)         # live, unanswered for too long
    assert [d.action for d in agg.decisions] == ["notify", "notify"]
    offsets = data_clock_offsets(agg.store.backend)
    assert offsets["bella"] > 300 * 86400 and offsets["max"] > 0  # max's record is late too (not live)
    agg.tick()  # the periodic sweep, wall clock
    rows = quality_by_model_version(agg.store)
    (row,) = rows
    states = _states(agg.store)
    assert states["bella"] == "notified", "a replayed alert is not ignored before the owner could answer"
    assert row["ignored"] == 0 and row["ignored_rate"] == 0.0


def test_a_live_alert_is_swept_after_ignore_after_s(any_store: CloudStore) -> None:
    agg = Aggregator(any_store, NotificationPolicy.from_toml(None), publish=lambda t, p: None)
    after = agg.policy.settings.ignore_after_s
    now = time.time()
    _event(agg, "collar-001", "max", 1, now)
    from cloud.feedback.store import implicit_sweep
    assert implicit_sweep(agg.store, now + after / 2) == 0
    assert implicit_sweep(agg.store, now + after + 1) == 1
    assert _states(agg.store) == {"max": "ignored"}


def test_replayed_alert_is_swept_once_the_owner_had_time_and_time_to_act_is_on_event_time(
        any_store: CloudStore) -> None:
    agg = Aggregator(any_store, NotificationPolicy.from_toml(None), publish=lambda t, p: None)
    after = agg.policy.settings.ignore_after_s
    _event(agg, "collar-000", "bella", 1, OLD + 3 * 86400)
    _event(agg, "collar-001", "max", 1, OLD + 5 * 86400)
    offset = data_clock_offsets(agg.store.backend)["bella"]
    from cloud.feedback.store import implicit_sweep
    now = time.time()
    assert implicit_sweep(agg.store, now) == 0
    # bella's owner acts ten minutes (wall) after the alert was stored; max's never answers
    record_feedback(agg.store, Feedback("collar-000:1", "bella", "acted", now + 600), source="cli")
    assert implicit_sweep(agg.store, now + after + 60) == 1, "max's alert, unanswered, is swept in time"
    assert _states(agg.store) == {"bella": "acted", "max": "ignored"}
    (row,) = quality_by_model_version(agg.store)
    assert row["ignored"] == 1 and row["ignored_rate"] == 0.5
    t_act = row["median_time_to_act_s"]
    assert t_act is not None and abs(t_act - (now + 600 - offset - (OLD + 3 * 86400))) < 1.0
    assert t_act < 3600, f"time to act {t_act:.0f} s: wall-clock answers land on the event's time axis"
