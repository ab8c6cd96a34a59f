"""Notifiers: payload shape, MQTT topic, webhook delivery and counted (not raised) failures."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from recs import record_of

from cloud.notifiers import (
    FanOutNotifier,
    LogNotifier,
    MqttNotifier,
    WebhookNotifier,
    alert_payload,
)
from cloud.rules.notify import Decision, NotificationPolicy, alert_event_body, handle_event
from shared import topics
from shared.schemas import UplinkBatch

BODY = {"start_ts": 100.0, "ts": 43200.0, "metrics": ["hr_rest"], "directions": [1], "score": 0.9,
        "severity": "critical", "kind": "sustained", "baseline": [60.0], "observed": [80.0],
        "model_version": "m7", "detector_version": "d"}
DEC = Decision("dev1:4", "notify", "critical deviation", "critical", "inc:dev1:4", "rex", "dev1", 4,
               43200.0)


def test_payload():
    p = alert_payload(DEC, BODY)
    assert p["type"] == "alert" and p["v"] == 1 and p["alert_id"] == "dev1:4"
    assert (p["severity"], p["metrics"], p["model_version"], p["reminder"]) == ("critical", ["hr_rest"], "m7", False)
    assert alert_payload(Decision(**{**DEC.__dict__, "rule": "renotify"}), BODY)["reminder"] is True
    json.dumps(p, allow_nan=False)


def test_mqtt_notifier_publishes_on_the_owner_topic_and_counts_failures():
    sent = []
    n = MqttNotifier(lambda topic, payload: sent.append((topic, payload)))
    n.send(DEC, BODY)
    assert sent[0][0] == topics.owner_alerts("rex")
    assert json.loads(sent[0][1])["alert_id"] == "dev1:4"

    def broken(topic, payload):
        raise ConnectionError("broker gone")

    b = MqttNotifier(broken)
    b.send(DEC, BODY)
    assert (b.sent, b.failures) == (0, 1) and "broker gone" in (b.last_error or "")


def test_log_notifier(caplog):
    n = LogNotifier()
    with caplog.at_level(logging.INFO, logger="cloud.notifiers"):
        n.send(DEC, BODY)
    assert n.sent == 1 and n.payloads[0]["individual_id"] == "rex"
    assert any(r.getMessage() == "notify.sent" for r in caplog.records)


class _Sink(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sink():
    _Sink.received = []
    _Sink.status = 200
    srv = HTTPServer(("127.0.0.1", 0), _Sink)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join()


def test_webhook_delivers_and_counts_http_errors(sink):
    url = f"http://127.0.0.1:{sink.server_address[1]}/hook"
    n = WebhookNotifier(url, timeout=2)
    n.send(DEC, BODY)
    assert (n.sent, n.failures) == (1, 0) and _Sink.received[0]["alert_id"] == "dev1:4"
    _Sink.status = 500
    n.send(DEC, BODY)
    assert (n.sent, n.failures) == (1, 1) and "500" in (n.last_error or "")


def test_webhook_unreachable_is_counted_not_raised():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    n = WebhookNotifier(f"http://127.0.0.1:{port}/", timeout=1)
    n.send(DEC, BODY)
    assert (n.sent, n.failures) == (0, 1)


def test_webhook_rejects_non_http_urls():
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("file:///etc/passwd")


def test_fan_out_survives_a_broken_notifier():
    class Broken:
        def send(self, decision, event_body):
            raise RuntimeError("bug")

    log = LogNotifier()
    f = FanOutNotifier([Broken(), log])
    f.send(DEC, BODY)
    assert log.sent == 1 and f.failures == 1


def test_end_to_end_decision_to_notifier(any_store):
    store = any_store
    rec = record_of(seq=4, kind="event", ts=43200.0, individual_id="rex", body=BODY)
    store.store_batch(UplinkBatch(device_id="dev1", records=(rec,)))
    d = handle_event(store, NotificationPolicy.from_toml(), "dev1", rec)
    assert (d.alert_id, d.action, d.rule, d.incident_id) == (DEC.alert_id, "notify", "critical", DEC.incident_id)
    sent = []
    MqttNotifier(lambda t, p: sent.append(json.loads(p))).send(d, alert_event_body(store, d.alert_id))
    assert sent[0]["score"] == 0.9 and sent[0]["reason"] == "critical deviation in hr_rest (score 0.90)"
