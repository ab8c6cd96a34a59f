"""Both metrics endpoints, scraped and parsed as Prometheus text: ``edgeloop cloud --http`` against a
private mosquitto fed uplinks (good, duplicate, bad), and ``edgeloop agent --metrics`` on a trace.
prometheus_client stays off the agent's import path unless --metrics is given."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker, free_port
from prometheus_client.parser import text_string_to_metric_families
from test_aggregator import event_body

from shared import schemas, topics

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]


def scrape(url: str, timeout: float = 60.0) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET url (retrying until it answers) -> {sample name: {sorted labels: value}}."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = resp.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return m[name][tuple(sorted(labels.items()))]


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "collar.bin"
    subprocess.run([*EDGELOOP, "sim", "--trace", str(path), "--days", "0.2"], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    return path


def test_agent_metrics_endpoint(tmp_path: Path, trace: Path) -> None:
    port = free_port()
    with open(tmp_path / "agent.log", "w") as err:
        agent = subprocess.Popen([*EDGELOOP, "agent", "--source", str(trace), "--offline", "--state-dir",
                                  str(tmp_path / "state"), "--metrics", f"127.0.0.1:{port}", "--drain-timeout", "0"],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while True:
            m = scrape(f"http://127.0.0.1:{port}/metrics")
            if value(m, "edgeloop_agent_windows_total") >= 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    assert value(m, "edgeloop_agent_frames_total") > 200
    assert value(m, "edgeloop_agent_windows_total") >= 200
    assert value(m, "edgeloop_agent_frames_rejected_total", reason="crc_errors") >= 0
    assert value(m, "edgeloop_agent_frames_rejected_total", reason="payload") >= 0
    assert value(m, "edgeloop_agent_scoring_seconds_count") == value(m, "edgeloop_agent_windows_total")
    assert value(m, "edgeloop_agent_scoring_seconds_sum") > 0
    assert value(m, "edgeloop_agent_inference_seconds_count") > 0, "the activity model ran"
    assert value(m, "edgeloop_agent_scoring_seconds_bucket", le="+Inf") == value(m, "edgeloop_agent_scoring_seconds_count")
    assert value(m, "edgeloop_agent_connected") == 0.0, "offline"
    info = next(iter(m["edgeloop_agent_info"]))
    assert ("device_id", "collar-000") in info
    # offline: what the agent wrote waits in the outbox, and its age is the sync lag
    assert "edgeloop_agent_outbox_bytes" in m and "edgeloop_agent_sync_lag_seconds" in m
    assert value(m, "edgeloop_agent_outbox_rows", kind="event") >= 0


def test_agent_without_metrics_does_not_import_prometheus_client(tmp_path: Path, trace: Path) -> None:
    code = ("import sys; from edgeloop.cli import main; "
            f"main(['agent', '--source', {str(trace)!r}, '--offline', '--exit-on-eof', '--state-dir', "
            f"{str(tmp_path / 's')!r}, '-q']); print('LOADED' if 'prometheus_client' in sys.modules else 'LEAN')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "LEAN"


@pytest.mark.mosquitto
def test_cloud_metrics_endpoint(tmp_path: Path, mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    broker: MosquittoBroker = mosquitto_factory(extra_conf="sys_interval 1")
    port = free_port()
    conf = tmp_path / "cloud.toml"
    conf.write_text(f"http = '127.0.0.1:{port}'\n")
    with open(tmp_path / "cloud.log", "w") as err:
        cloud = subprocess.Popen([*EDGELOOP, "cloud", "--config", str(conf), "--db", str(tmp_path / "c.db"),
                                  "--broker", broker.url], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        scrape(url)  # up
        now = time.time()
        ev = schemas.Record(2, "event", now, "bella", {**event_body(), "start_ts": now - 7200, "ts": now})
        summary = schemas.Record(1, "summary", now - 60, "bella", {"day": "2026-12-01"})
        good = schemas.encode(schemas.UplinkBatch("collar-000", (summary, ev)))
        with Collector.connect(broker, "dev") as dev:
            dev.publish_many([(topics.uplink("collar-000"), good), (topics.uplink("collar-000"), good),
                              (topics.uplink("collar-000"), b"{not json"),
                              (topics.status("collar-000"), schemas.encode(schemas.Status("collar-000", "online", now)))])
        deadline = time.monotonic() + 45
        while True:  # the counters settle within a tick or two (notifications go out on a worker)
            m = scrape(url)
            try:
                _check_cloud(m)
                break
            except (AssertionError, KeyError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.3)
    finally:
        cloud.send_signal(signal.SIGTERM)
        assert cloud.wait(30) == 0


def _check_cloud(m: dict) -> None:  # type: ignore[type-arg]
    assert value(m, "edgeloop_cloud_messages_received_total") >= 4
    assert value(m, "edgeloop_cloud_messages_rejected_total", reason="schema") == 1
    assert value(m, "edgeloop_cloud_records_stored_total") == 2
    assert value(m, "edgeloop_cloud_records_duplicate_total") == 2
    assert value(m, "edgeloop_cloud_decisions_total", action="notify") == 1
    assert value(m, "edgeloop_cloud_notifications_sent_total", channel="log") == 1
    assert value(m, "edgeloop_cloud_notifications_failed_total", channel="log") == 0
    assert value(m, "edgeloop_cloud_store_seconds_count") == 2
    assert value(m, "edgeloop_cloud_devices", state="online") == 1
    assert value(m, "edgeloop_cloud_rollouts", stage="canary") == 0
    assert value(m, "edgeloop_cloud_connected") == 1.0
    assert value(m, "edgeloop_cloud_notification_deliveries", channel="log", state="sent") == 1
    assert value(m, "edgeloop_broker_clients_connected") >= 1
    assert "edgeloop_broker_messages_received_total" in m and "edgeloop_broker_bytes_sent_total" in m
