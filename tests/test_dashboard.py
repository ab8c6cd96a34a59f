"""The dashboard in a real browser: Debian's chromium driven by Playwright against ``edgeloop cloud
--http`` on a private Mosquitto, fed by two real ``edgeloop agent`` processes replaying 10 simulated
days each (bella: illness, luna: heat stress). Checks the fleet page, an individual's page with its
plot, an incident with its decision reason, an operator action with and without the token.

Screenshots are written to ``out/test-artifacts/dashboard/`` (or ``$EDGELOOP_ARTIFACTS/dashboard``):
fleet.png, individual.png, incident.png, feedback_done.png, releases.png, notifications.png.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import MosquittoBroker, free_port

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
TOKEN = "s3cret-operator-token"
DAYS = 10


def artifacts() -> Path:
    base = Path(os.environ.get("EDGELOOP_ARTIFACTS") or ROOT / "out" / "test-artifacts")
    path = base / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_chromium() -> str:
    """Debian's chromium; installed here when missing and we are root (CI), else a skip/fail."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True,
                           text=True, timeout=1200)
        if r.returncode == 0 and os.access(CHROMIUM, os.X_OK):
            return CHROMIUM
        msg = f"apt-get install chromium failed: {r.stderr[-500:]}"
    else:
        msg = "chromium not found: apt-get install chromium (as root)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def cloud_with_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from conftest import require_mosquitto

    require_mosquitto()
    chromium = ensure_chromium()
    tmp = tmp_path_factory.mktemp("dashboard")
    broker = MosquittoBroker(tmp / "mosquitto", extra_conf="sys_interval 1").start()
    port = free_port()
    log = open(tmp / "cloud.log", "w")  # noqa: SIM115 - closed below
    cloud = subprocess.Popen([*EDGELOOP, "cloud", "--db", str(tmp / "cloud.db"), "--broker", broker.url,
                              "--http", f"127.0.0.1:{port}", "--log-format", "json"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=log,
                             env={**os.environ, "EDGELOOP_OPERATOR_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"})
    try:
        sims = [subprocess.Popen([*EDGELOOP, "sim", "--trace", str(tmp / f"c{i}.bin"), "--index", str(i),
                                  "--days", str(DAYS)], cwd=ROOT, stdout=subprocess.DEVNULL) for i in (0, 2)]
        assert all(s.wait(300) == 0 for s in sims)
        deadline = time.monotonic() + 60
        while '"cloud.connected"' not in (tmp / "cloud.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        agents = [subprocess.Popen([*EDGELOOP, "agent", "--source", str(tmp / f"c{i}.bin"), "--device-id",
                                    f"collar-00{i}", "--state-dir", str(tmp / f"s{i}"), "--exit-on-eof",
                                    "--broker", broker.url, "-q"], cwd=ROOT, stdout=subprocess.DEVNULL)
                  for i in (0, 2)]
        assert all(a.wait(600) == 0 for a in agents), "the agents replayed their traces and drained"
        yield {"base": f"http://127.0.0.1:{port}", "chromium": chromium, "tmp": tmp}
    finally:
        cloud.send_signal(signal.SIGTERM)
        cloud.wait(30)
        log.close()
        broker.stop()


def _browser(p: Any, chromium: str, tmp: Path) -> Any:
    ud = tmp / f"chromium-profile-{time.monotonic_ns()}"  # a fresh --user-data-dir every time
    return p.chromium.launch_persistent_context(str(ud), executable_path=chromium, headless=True,
                                                args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000})


def test_dashboard_in_headless_chromium(cloud_with_agents: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    base, out = cloud_with_agents["base"], artifacts()
    with sync_playwright() as p:
        ctx = _browser(p, cloud_with_agents["chromium"], cloud_with_agents["tmp"])
        try:
            page = ctx.new_page()
            # the fleet: both collars, their status from the retained status topic, versions, battery
            page.goto(base + "/")
            rows = page.locator("#fleet tr.device")
            assert rows.count() == 2
            fleet_text = page.locator("#fleet").inner_text()
            for text in ("collar-000", "collar-002", "bella", "luna", "stopped", "0.1.0", "%"):
                assert text in fleet_text, text
            deadline = time.monotonic() + 20  # the broker's $SYS figures arrive every second
            while "CLIENTS CONNECTED" not in page.locator("#broker").inner_text().upper() and time.monotonic() < deadline:
                time.sleep(1.0)
                page.reload()
            assert "clients connected" in page.locator("#broker").inner_text().lower()
            page.screenshot(path=str(out / "fleet.png"), full_page=True)

            # an individual: the plot is an inline SVG with the signal, band and event spans
            page.click("text=bella")
            page.wait_for_selector("#plot svg")
            assert page.url.endswith("/individuals/bella")
            assert page.locator("#plot svg path").count() > 50
            assert "baseline" in page.locator("#plot").inner_text()
            page.screenshot(path=str(out / "individual.png"), full_page=True)

            # an incident with its decision, rule and reason
            page.goto(base + "/incidents")
            assert page.locator("#incidents tr.incident").count() >= 1
            page.locator("#incidents tr.incident a[href^='/incidents/']").first.click()
            page.wait_for_selector("#alerts tr.alert")
            reason = page.locator("#alerts tr.alert td.reason").first.inner_text()
            assert "deviation" in reason, reason
            assert page.locator("#alerts .pill").first.inner_text() in ("notify", "hold", "suppress", "collect_more")
            page.screenshot(path=str(out / "incident.png"), full_page=True)

            # changing state needs the operator token: refused without it, recorded with it
            incident_url = page.url
            page.locator("#alerts tr.alert button[value=confirm]").first.click()
            assert "operator token required" in page.locator("#refused").inner_text()
            page.goto(incident_url)
            page.fill("#alerts tr.alert input[name=token]", TOKEN)
            page.locator("#alerts tr.alert button[value=confirm]").first.click()
            page.wait_for_selector("#done")
            assert "confirm recorded" in page.locator("#done").inner_text()
            assert "confirm" in page.locator("#feedback").inner_text()
            page.screenshot(path=str(out / "feedback_done.png"), full_page=True)

            for name in ("releases", "notifications"):
                page.goto(f"{base}/{name}")
                assert page.locator("h1").inner_text()
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            assert "sent" in page.locator("#deliveries").inner_text()
        finally:
            ctx.close()
    for shot in ("fleet", "individual", "incident", "feedback_done", "releases", "notifications"):
        assert (out / f"{shot}.png").stat().st_size > 10_000, shot


def test_metrics_stay_open_beside_the_dashboard(cloud_with_agents: dict[str, Any]) -> None:
    with urllib.request.urlopen(cloud_with_agents["base"] + "/metrics", timeout=10) as r:
        assert b"edgeloop_cloud_records_stored_total" in r.read()


def _app(tmp_path: Path, token: str | None) -> Any:
    from types import SimpleNamespace

    from cloud.aggregator.inbox import FairInbox
    from cloud.ops.broker_sys import BrokerSys
    from cloud.ops.web import create_app
    from cloud.store.db import CloudStore

    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "c.db"
    CloudStore(db).close()
    agg = SimpleNamespace(store=SimpleNamespace(store_many=lambda b: None), counts={}, notifiers=[])
    svc = SimpleNamespace(agg=agg, broker_sys=BrokerSys(), received=0, retained_refused=0, client_id="edgeloop-test",
                          connected=SimpleNamespace(is_set=lambda: True), inbox=FairInbox())
    return create_app(svc, str(db), operator_token=token).test_client()


def test_read_pages_need_the_token_only_from_elsewhere(tmp_path: Path) -> None:
    client = _app(tmp_path, TOKEN)
    assert client.get("/", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/releases", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    far = {"REMOTE_ADDR": "192.0.2.7"}
    r = client.get("/", environ_base=far)
    assert r.status_code == 401 and b"/login" in r.data
    assert client.get("/", environ_base=far, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/", environ_base=far, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", environ_base=far).status_code == 200, "Prometheus scrapes without a login"
    login = client.post("/login", data={"token": TOKEN}, environ_base=far)
    assert login.status_code == 302 and "edgeloop_token=" in login.headers["Set-Cookie"]
    assert "HttpOnly" in login.headers["Set-Cookie"]


def test_state_changes_need_a_configured_token(tmp_path: Path) -> None:
    local = {"REMOTE_ADDR": "127.0.0.1"}
    off = _app(tmp_path / "a", None)
    r = off.post("/rollouts/1/halt", data={"token": "anything"}, environ_base=local)
    assert r.status_code == 403 and b"operator_token_env" in r.data
    on = _app(tmp_path / "b", TOKEN)
    assert on.post("/rollouts/1/halt", data={"token": "wrong"}, environ_base=local).status_code == 403
    r = on.post("/rollouts/1/halt", data={"token": TOKEN}, environ_base=local)
    assert r.status_code == 400 and b"rollout 1 not found" in r.data
    r = on.post("/alerts/collar-000:9/feedback", data={"token": TOKEN, "action": "confirm",
                                                       "individual_id": "bella"}, environ_base=local)
    assert r.status_code == 400 and b"feedback refused" in r.data


def test_every_page_reads_the_store_on_either_back_end(store_url: str) -> None:
    """The dashboard's pages, its metrics and an operator's feedback, on SQLite and on PostgreSQL:
    an aggregator in this process stores and decides bella's event, the pages show it."""
    from types import SimpleNamespace

    from recs import record_of
    from test_aggregator import T0, batch, event_body

    from cloud.aggregator.clock import RecordClock
    from cloud.aggregator.handler import Aggregator
    from cloud.aggregator.inbox import FairInbox
    from cloud.ops.broker_sys import BrokerSys
    from cloud.ops.web import create_app
    from cloud.rules.notify import NotificationPolicy
    from cloud.store.db import open_store
    from shared import topics

    store = open_store(store_url)
    try:
        agg = Aggregator(store, NotificationPolicy.from_toml(None), publish=lambda t, p: None, clock=RecordClock())
        agg.handle_message(topics.uplink("collar-000"), batch(
            "collar-000", record_of(1, "summary", T0, "bella", {"day": "2026-01-05", "battery": 81}),
            record_of(2, "event", T0 + 3 * 86400 + 7200, "bella", event_body())))
        (decision,) = agg.decisions
        assert decision.action == "notify"
        svc = SimpleNamespace(agg=agg, broker_sys=BrokerSys(), received=0, retained_refused=0,
                              client_id="edgeloop-test", connected=SimpleNamespace(is_set=lambda: True),
                              inbox=FairInbox())
        client = create_app(svc, store_url, operator_token=TOKEN).test_client()
        local = {"REMOTE_ADDR": "127.0.0.1"}
        fleet = client.get("/", environ_base=local)
        assert fleet.status_code == 200 and b"collar-000" in fleet.data and b"bella" in fleet.data
        inc = client.get(f"/incidents/{decision.incident_id}", environ_base=local)
        assert inc.status_code == 200 and decision.rule.encode() in inc.data
        page = client.get("/individuals/bella", environ_base=local)
        assert page.status_code == 200 and b"<svg" in page.data
        for path in ("/incidents", "/releases", "/notifications"):
            assert client.get(path, environ_base=local).status_code == 200, path
        r = client.post(f"/alerts/{decision.alert_id}/feedback", environ_base=local,
                        data={"token": TOKEN, "action": "confirm", "individual_id": "bella"})
        assert r.status_code == 302 and "recorded" in r.headers["Location"]
        again = client.get(f"/incidents/{decision.incident_id}", environ_base=local)
        assert b"confirm" in again.data
        metrics = client.get("/metrics", environ_base=local).data.decode()
        assert 'edgeloop_cloud_feedback{action="confirm"} 1.0' in metrics or \
            'edgeloop_cloud_feedback_total{action="confirm"} 1.0' in metrics, metrics[-2000:]
    finally:
        store.close()
