"""Notifications that reach people: channels from the cloud's TOML (webhook with timeout, retries,
token and signature; MQTT owner/<id>/alerts; the log), every delivery recorded with its outcome,
failed deliveries retried and visible, given up after the configured retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from brokers import Collector, MosquittoBroker, free_port
from recs import record_of
from test_aggregator import T0, event_body

from cloud.config import CloudConfig, NotifierConfig
from cloud.delivery import Channel, Deliveries, build_deliveries
from cloud.notifiers import DeliveryError
from cloud.rules.notify import Decision
from cloud.store.db import CloudStore, open_store
from shared import schemas, topics
from shared.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]


class Hook(ThreadingHTTPServer):
    """A webhook receiver: answers the queued statuses in turn (then 200), records each request."""

    daemon_threads = True

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.statuses = list(statuses or [])
        self.delay = delay
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.got = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def wait(self, n: int, timeout: float = 20.0) -> bool:
        with self.got:
            return self.got.wait_for(lambda: len(self.requests) >= n, timeout)


class _HookHandler(BaseHTTPRequestHandler):
    server: Hook

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.server.delay)
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.server.got:
            self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.server.got.notify_all()


@pytest.fixture
def hook() -> Iterator[Hook]:
    servers: list[Hook] = []

    def make(statuses: list[int] | None = None, delay: float = 0.0) -> Hook:
        s = Hook(statuses, delay)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in servers:
        s.shutdown()
        s.server_close()


def decision(seq: int = 7, individual: str = "bella") -> Decision:
    return Decision(alert_id=f"collar-000:{seq}", device_id="collar-000", seq=seq, individual_id=individual,
                    ts=T0, action="notify", rule="critical", reason="resting_hr up 15 bpm", incident_id=1)


def _pump(d: Deliveries, until, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.tick()
        if until():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_notifiers_come_from_the_cloud_toml(tmp_path: Path) -> None:
    f = tmp_path / "cloud.toml"
    f.write_text("""
[[notifiers]]
kind = "webhook"
name = "owner-app"
url = "https://hooks.example.org/edgeloop"
timeout = 3.0
retries = 4
token_env = "HOOK_TOKEN"
headers = { "X-Tenant" = "kennel-7" }

[[notifiers]]
kind = "mqtt"

[[notifiers]]
kind = "log"
""")
    cfg = load(CloudConfig, f)
    assert [n.label for n in cfg.notifiers] == ["owner-app", "mqtt", "log"]
    assert cfg.notifiers[0].timeout == 3.0 and cfg.notifiers[0].headers == {"X-Tenant": "kennel-7"}
    assert CloudConfig().notifiers == (NotifierConfig(kind="log"),), "the log only, by default"


@pytest.mark.parametrize("toml,where", [
    ('[[notifiers]]\nkind = "webhook"\nurl = "ftp://x"\n', "must be http(s)://"),
    ('[[notifiers]]\nkind = "pager"\n', "kind: 'pager' is not one of"),
    ('[[notifiers]]\nkind = "webhook"\nurl = "http://x/h"\nretries = -1\n', "retries: -1"),
    ('[[notifiers]]\nkind = "log"\nurll = "x"\n', "urll: unknown key"),
    ('[[notifiers]]\nkind = "log"\n[[notifiers]]\nkind = "log"\n', "repeat"),
])
def test_bad_notifier_config_names_the_key(tmp_path: Path, toml: str, where: str) -> None:
    f = tmp_path / "cloud.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=where.replace("(", r"\(").replace(")", r"\)")):
        load(CloudConfig, f)


def test_a_missing_secret_is_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    cfg = NotifierConfig(kind="webhook", url="http://127.0.0.1:9/h", token_env="HOOK_TOKEN")
    with pytest.raises(ValueError, match="HOOK_TOKEN is empty or unset"):
        build_deliveries(CloudStore().backend, [cfg], None)


def test_webhook_is_received_with_token_and_signature(hook, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                      any_store: CloudStore) -> None:
    server = hook()
    monkeypatch.setenv("HOOK_TOKEN", "t0k3n")
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    d = build_deliveries(any_store.backend, [NotifierConfig(kind="webhook", url=server.url, token_env="HOOK_TOKEN",
                                             hmac_secret_env="HOOK_SECRET")], None)
    try:
        d.send(decision(), event_body())
        assert server.wait(1)
        _pump(d, lambda: d.sent == 1)
    finally:
        d.close()
    headers, body, _ = server.requests[0]
    alert = json.loads(body)
    assert alert["type"] == "alert" and alert["alert_id"] == "collar-000:7" and alert["individual_id"] == "bella"
    assert alert["reason"] == "resting_hr up 15 bpm" and alert["metrics"] == ["resting_hr", "activity"]
    assert headers["authorization"] == "Bearer t0k3n" and headers["content-type"] == "application/json"
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["x-edgeloop-signature"] == f"sha256={expected}"
    (row,) = d.log.recent()
    assert (row["state"], row["attempts"], row["channel"], row["last_error"]) == ("sent", 1, "webhook", "")


def test_a_failed_webhook_is_retried_until_it_lands(hook, any_store: CloudStore) -> None:  # type: ignore[no-untyped-def]
    server = hook(statuses=[503, 500])
    d = build_deliveries(any_store.backend, [NotifierConfig(kind="webhook", url=server.url, backoff=0.2)], None)
    try:
        d.send(decision(), event_body())
        _pump(d, lambda: d.log.recent()[0]["state"] == "retrying")
        row = d.log.recent()[0]
        assert row["last_error"].startswith("HTTP 503") and row["next_attempt_at"] > row["updated_at"], \
            "the failure is visible with its reason and the next attempt"
        _pump(d, lambda: d.sent == 1)
    finally:
        d.close()
    assert [s for _, _, s in server.requests] == [503, 500, 200]
    assert len({b for _, b, _ in server.requests}) == 1, "every attempt carries the same alert"
    row = d.log.recent()[0]
    assert (row["state"], row["attempts"]) == ("sent", 3) and d.failures == 2
    assert d.counts["webhook.failed"] == 2 and d.counts["webhook.sent"] == 1


def test_a_delivery_is_given_up_after_its_retries_and_a_slow_hook_times_out(  # type: ignore[no-untyped-def]
        hook, any_store: CloudStore) -> None:
    slow = hook(delay=1.0)
    dead = f"http://127.0.0.1:{free_port()}/hook"
    d = build_deliveries(any_store.backend, [
        NotifierConfig(kind="webhook", name="slow", url=slow.url, timeout=0.2, retries=0, backoff=0.1),
        NotifierConfig(kind="webhook", name="dead", url=dead, retries=1, backoff=0.1)], None)
    try:
        d.send(decision(), event_body())
        _pump(d, lambda: all(r["state"] == "failed" for r in d.log.recent()) and len(d.log.recent()) == 2)
    finally:
        d.close()
    rows = {r["channel"]: r for r in d.log.recent()}
    assert "within 0.2 s" in rows["slow"]["last_error"] and rows["slow"]["attempts"] == 1
    assert "cannot reach" in rows["dead"]["last_error"] and rows["dead"]["attempts"] == 2
    assert d.counts["dead.gave_up"] == 1 and d.counts["slow.gave_up"] == 1


def test_open_deliveries_survive_a_restart(store_url: str, hook) -> None:  # type: ignore[no-untyped-def]
    never = Channel("hook", "webhook", lambda ind, p: (_ for _ in ()).throw(DeliveryError("down")), retries=5, backoff=60)
    first = open_store(store_url)
    d = Deliveries(first.backend, [never])
    d.send(decision(), event_body())
    _pump(d, lambda: d.log.recent()[0]["state"] == "retrying")
    d.close()
    first.close()
    server = hook()  # the endpoint is back; a new process starts with the same store
    second = open_store(store_url)
    d2 = Deliveries(second.backend, [Channel("hook", "webhook", lambda ind, p: None, retries=5, backoff=60)],
                    clock=lambda: time.time() + 120)
    try:
        _pump(d2, lambda: d2.log.recent()[0]["state"] == "sent")
    finally:
        d2.close()
    try:
        assert d2.log.recent()[0]["attempts"] == 2
    finally:
        second.close()
    assert server.requests == []


def test_two_aggregators_on_one_store_deliver_each_notification_once(store_url: str) -> None:
    """Issue 14: aggregators share the deliveries table; a delivery one of them queued, or a retry
    that fell due, goes out from exactly one of them (before: every aggregator's tick sent it)."""
    stores = [open_store(store_url), open_store(store_url)]
    got: list[str] = []
    lock = threading.Lock()
    flaky = {"left": 1}

    def deliver(who: str):  # type: ignore[no-untyped-def]
        def send(ind: str, payload: bytes) -> None:
            with lock:
                if flaky["left"]:
                    flaky["left"] -= 1
                    raise DeliveryError("down once")
                got.append(who)
        return send

    now = [time.time()]
    a = Deliveries(stores[0].backend, [Channel("hook", "webhook", deliver("a"), retries=3, backoff=1)],
                   clock=lambda: now[0])
    b = Deliveries(stores[1].backend, [Channel("hook", "webhook", deliver("b"), retries=3, backoff=1)],
                   clock=lambda: now[0])
    try:
        a.send(decision(1), event_body())  # its first attempt fails: a retry falls due in 1 s
        _pump(a, lambda: a.log.recent()[0]["state"] == "retrying")
        b.tick()
        a.send(decision(2), event_body())
        now[0] += 5  # the retry is due for both
        for _ in range(50):
            a.tick()
            b.tick()
            time.sleep(0.02)
        _pump(a, lambda: all(r["state"] == "sent" for r in a.log.recent()))
        b.tick()
    finally:
        a.close()
        b.close()
    rows = a.log.recent()
    for st in stores:
        st.close()
    assert [r["state"] for r in rows] == ["sent", "sent"], rows
    assert len(got) == 2, f"each notification delivered once, got {got}"


@pytest.mark.mosquitto
def test_edgeloop_cloud_delivers_to_a_webhook_and_the_owner_topic(tmp_path: Path, hook, mosquitto: MosquittoBroker) -> None:  # type: ignore[no-untyped-def]
    server = hook(statuses=[500])  # fails first: the retry lands
    conf = tmp_path / "cloud.toml"
    conf.write_text(f"""stats_every = 0.5
[[notifiers]]
kind = "webhook"
url = "{server.url}"
backoff = 0.3
[[notifiers]]
kind = "mqtt"
[[notifiers]]
kind = "log"
""")
    db = tmp_path / "cloud.db"
    log = tmp_path / "cloud.log"
    with open(log, "w") as err:
        cloud = subprocess.Popen([*EDGELOOP, "cloud", "--config", str(conf), "--db", str(db), "--broker",
                                  mosquitto.url, "--log-format", "json"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while "cloud.connected" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        with Collector.connect(mosquitto, "owner-app") as owner:
            owner.subscribe(topics.owner_alerts("bella"))
            now = time.time()  # a fresh event: no reminder for an old unanswered one comes with it
            rec = record_of(3, "event", now, "bella", {**event_body(), "start_ts": now - 7200, "ts": now})
            owner.publish_many([(topics.uplink("collar-000"), schemas.encode(schemas.UplinkBatch("collar-000", (rec,))))])
            assert owner.wait_for(1, timeout=20), "the owner topic got the alert"
            alert = json.loads(owner.messages[0][1])
            assert alert["alert_id"] == "collar-000:3" and alert["type"] == "alert"
        assert server.wait(2), f"webhook requests: {server.requests}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = sqlite3.connect(db).execute(
                "SELECT channel, state, attempts FROM deliveries ORDER BY channel").fetchall()
            if all(r[1] == "sent" for r in rows) and len(rows) == 3:
                break
            time.sleep(0.2)
        assert rows == [("log", "sent", 1), ("mqtt", "sent", 1), ("webhook", "sent", 2)]
    finally:
        cloud.send_signal(signal.SIGTERM)
        assert cloud.wait(30) == 0
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    failed = [e for e in events if e["event"] == "notify.failed"]
    assert failed and failed[0]["channel"] == "webhook" and failed[0]["error"].startswith("HTTP 500")
    assert any(e["event"] == "notify.delivered" and e["channel"] == "webhook" and e["attempt"] == 2 for e in events)
