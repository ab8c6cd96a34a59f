"""The loop through the lead's Aggregator (no broker): uplink event -> decision -> owner alert on
MQTT -> owner feedback on MQTT -> personalisation command -> a later event is personalised.
A contract test between cloud.aggregator and cloud.rules / cloud.feedback / cloud.notifiers, on
both store back ends."""

from __future__ import annotations

import json

from recs import record_of

from cloud.aggregator.handler import Aggregator
from cloud.feedback import personalisation_commands
from cloud.notifiers import MqttNotifier
from cloud.rules.notify import NotificationPolicy
from cloud.store.db import CloudStore
from shared import topics
from shared.schemas import Feedback, UplinkBatch, encode

NOON = 1_767_571_200.0 + 20 * 86400.0 + 12 * 3600  # a noon in 2026: the cloud refuses 1970 times


def _batch(seq, ts, observed):
    body = {"start_ts": ts - 7200, "ts": ts, "metrics": ["resting_hr"], "directions": [1],
            "score": 0.85, "severity": "critical", "kind": "sustained", "baseline": [62.0],
            "observed": [observed], "model_version": "abc123", "detector_version": "1"}
    return encode(UplinkBatch("collar-7", (record_of(seq, "event", ts, "bella", body),)))


def test_feedback_loop_through_the_aggregator(any_store: CloudStore) -> None:
    store = any_store
    published: list[tuple[str, bytes]] = []
    agg = Aggregator(store, NotificationPolicy.from_toml(),
                     publish=lambda t, p: published.append((t, p)),
                     notifiers=[MqttNotifier(lambda t, p: published.append((t, p)))])
    agg.handle_message(topics.uplink("collar-7"), _batch(1, NOON, 74.0))
    (d,) = agg.decisions
    assert (d.action, d.rule) == ("notify", "critical")
    alerts = [json.loads(p) for t, p in published if t == topics.owner_alerts("bella")]
    assert [a["alert_id"] for a in alerts] == [d.alert_id]

    fb = Feedback(alert_id=d.alert_id, individual_id="bella", action="normal_for_her", ts=NOON + 600)
    agg.handle_message(topics.owner_feedback("bella"), encode(fb))
    assert agg.counts["feedback"] == 1
    assert store.backend.query("SELECT state FROM alerts WHERE alert_id = ?", [d.alert_id]) == [
        {"state": "normal_for_her"}]
    (cmd,) = personalisation_commands(store, NOON + 601)
    assert cmd[:2] == ("collar-7", "config") and cmd[2]["action"] == "accept_new_normal"

    # a day later the same level is personalised; bad feedback is counted, not fatal
    agg.handle_message(topics.uplink("collar-7"), _batch(2, NOON + 86400, 75.0))
    assert (agg.decisions[-1].action, agg.decisions[-1].rule) == ("suppress", "personalised")
    bad = Feedback(alert_id="collar-7:999", individual_id="bella", action="confirm", ts=NOON)
    agg.handle_message(topics.owner_feedback("bella"), encode(bad))
    assert agg.counts["rejected"] == 1 and agg.counts["feedback"] == 1
