"""One client cannot slow the cloud (issue 11 item 6), through the real ``edgeloop cloud``.

A device floods its own uplink topic with junk (thousands of messages through a private
mosquitto) while a good device sends one batch: the good batch is acked within seconds, the
flood is refused or dropped and counted (``/metrics``), and the aggregator's resident memory stays
bounded (``VmRSS`` of the cloud process from /proc). Before the inbox was bounded and fair the good
batch waited behind the whole flood (one commit per junk message) and the memory grew with it.
Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from ackdevice import AckDevice
from brokers import MosquittoBroker, free_port
from recs import record_of

from shared import topics

REPO = Path(__file__).resolve().parent.parent
EDGELOOP = REPO / ".venv" / "bin" / "edgeloop"
T0 = 1767571200.0
INC = "d" * 32
FLOOD = 12_000  # junk messages
JUNK_BYTES = 16 * 1024  # each: 188 MiB in all
PER_DEVICE = 200  # the cloud's inbox_per_device here (the default is 1,000)


def rss_mb(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert m, f"no VmRSS for {pid}"
    return int(m.group(1)) / 1024


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@contextlib.contextmanager
def cloud_process(url: str, workdir: Path, config: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The real ``edgeloop cloud`` on ``url`` with this TOML config; yields (process, http port)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "cloud.toml"
    cfg.write_text(config)
    log = open(workdir / "cloud.log", "wb")  # noqa: SIM115 - closed below
    p = subprocess.Popen([str(EDGELOOP), "cloud", "--broker", url, "--db", str(workdir / "cloud.db"),
                          "--config", str(cfg), "--http", f"127.0.0.1:{port}", "-q"],
                         stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    try:
        yield p, port
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        log.close()


class GoodDevice(AckDevice):
    def __init__(self, url: str, device_id: str) -> None:
        super().__init__(url, device_id, INC)

    def send(self, seq: int, timeout: float) -> float:
        """Publish one batch; seconds until its ack (inf when none came in ``timeout``)."""
        rec = record_of(seq, "summary", T0 + seq * 60, "bella", {"day": "2026-01-05"})
        got = self.publish(rec, timeout=timeout)
        if got is None:
            return float("inf")
        took, ack = got
        assert ack.seqs == (seq,)
        return took


def flood(url: str, device_id: str, n: int, size: int, started: threading.Event) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{device_id}")
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(200)
    c.connect(host, int(port))
    c.loop_start()
    junk = os.urandom(size)
    try:
        for k in range(n):
            info = c.publish(topics.uplink(device_id), junk[k % 7:] + k.to_bytes(4, "big"), qos=1)
            while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho's own queue is full: wait for PUBACKs
                time.sleep(0.002)
                info = c.publish(topics.uplink(device_id), junk[k % 7:] + k.to_bytes(4, "big"), qos=1)
            if k == n * 3 // 4:  # the cloud has a backlog by now, if it keeps one
                started.set()
        info.wait_for_publish(60)
    finally:
        started.set()
        c.loop_stop()
        c.disconnect()


def flood_run(url: str, workdir: Path, flood_n: int = FLOOD, junk_bytes: int = JUNK_BYTES,
              per_device: int = PER_DEVICE) -> dict[str, float]:
    """One run: a cloud, a good device's batch acked idle, under a flood of ``flood_n`` junk
    messages from another device (sent when 3/4 of it is published) and after; the cloud's RSS
    and its counts. Returns the numbers."""
    config = f"inbox_per_device = {per_device}\nstats_every = 0\n"
    with cloud_process(url, workdir, config) as (proc, http):
        good = GoodDevice(url, "collar-good")
        try:
            deadline = time.monotonic() + 30
            while good.send(1, timeout=1) == float("inf"):  # until the cloud is up and subscribed
                assert time.monotonic() < deadline, "the cloud never acked a batch"
            idle = good.send(2, timeout=10)
            rss_before = rss_mb(proc.pid)
            peak = [rss_before]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.05):
                    peak[0] = max(peak[0], rss_mb(proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = threading.Event()
            t_flood = time.monotonic()
            flooder = threading.Thread(target=flood, args=(url, "collar-junk", flood_n, junk_bytes, started))
            flooder.start()
            assert started.wait(120)
            under_flood = good.send(3, timeout=180)
            flooder.join(180)
            flood_s = time.monotonic() - t_flood
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until the cloud has handled or dropped the flood
                m = scrape(http)
                if m["edgeloop_cloud_inbox_messages"] == 0 and m["edgeloop_cloud_messages_received_total"] >= flood_n:
                    break
                time.sleep(0.2)
            after = good.send(4, timeout=30)
            sampling.set()
            sampler.join(5)
            rss_after = rss_mb(proc.pid)
        finally:
            good.close()
        m = scrape(http)
    return {"flood": flood_n, "junk_kib": junk_bytes / 1024, "flood_mib": flood_n * junk_bytes / 2**20,
            "flood_s": flood_s, "received": m["edgeloop_cloud_messages_received_total"],
            "rejected": m['edgeloop_cloud_messages_rejected_total{reason="schema"}'],
            "dropped": sum(v for k, v in m.items() if k.startswith("edgeloop_cloud_inbox_dropped_total")),
            "idle_ms": idle * 1000, "under_flood_ms": under_flood * 1000, "after_ms": after * 1000,
            "rss_before_mb": rss_before, "rss_peak_mb": peak[0], "rss_after_mb": rss_after}


def describe(r: dict[str, float]) -> str:
    return (f"flood: {r['flood']:.0f} junk messages x {r['junk_kib']:.0f} KiB ({r['flood_mib']:.0f} MiB) from one "
            f"device in {r['flood_s']:.1f} s; cloud received {r['received']:.0f}, rejected {r['rejected']:.0f}, "
            f"dropped {r['dropped']:.0f}\ngood batch ack: idle {r['idle_ms']:.0f} ms, under the flood "
            f"{r['under_flood_ms']:.0f} ms, after {r['after_ms']:.0f} ms\ncloud RSS: before "
            f"{r['rss_before_mb']:.0f} MB, peak {r['rss_peak_mb']:.0f} MB, after {r['rss_after_mb']:.0f} MB")


@pytest.mark.timeout(300)
def test_a_flooding_device_does_not_delay_a_good_one_nor_grow_the_cloud(
        tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    r = flood_run(mosquitto.url, tmp_path / "cloud")
    print("\n" + describe(r))
    assert r["under_flood_ms"] < 5000, f"the good batch waited {r['under_flood_ms'] / 1000:.1f} s behind the flood"
    assert r["rss_peak_mb"] - r["rss_before_mb"] < 80, "the cloud grew with the flood"
    assert FLOOD * 0.9 <= r["rejected"] + r["dropped"] <= FLOOD, "the flood is counted"


# ---- without a broker: the aggregator's side of a flood ------------------------------------------

def test_rejections_are_written_in_batches_and_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    """A commit and a log line per junk message made a flood expensive: now every 256 (and
    ``flush_rejections``, which the service calls each second), at most 10 lines a second."""
    from cloud.aggregator.handler import Aggregator
    from cloud.rules.notify import NotificationPolicy
    from cloud.store.db import CloudStore

    agg = Aggregator(CloudStore(), NotificationPolicy.from_toml(None), reject_batch=256)
    caplog.set_level("WARNING", logger="cloud.aggregator.handler")
    for k in range(1000):
        agg.handle_message(topics.uplink("collar-junk"), b"junk %d" % k)
    assert agg.counts["rejected"] == 1000 and agg.counts["rejected.schema"] == 1000
    assert agg.store.db["rejections"].count == 768, "three batches of 256 written, the rest waits"
    agg.flush_rejections()
    assert agg.store.db["rejections"].count == 1000
    lines = [r for r in caplog.records if r.getMessage() == "aggregator.rejected"]
    assert 10 <= len(lines) <= 30 and agg.counts["rejections_not_logged"] == 1000 - len(lines)


def test_a_flood_on_an_owner_topic_is_kept_once_and_in_batches() -> None:
    """Refused feedback was stored twice, a commit each (the feedback module and the aggregator)."""
    from cloud.aggregator.handler import Aggregator
    from cloud.feedback.store import ERROR_COUNTS
    from cloud.rules.notify import NotificationPolicy
    from cloud.store.db import CloudStore

    agg = Aggregator(CloudStore(), NotificationPolicy.from_toml(None), reject_batch=256)
    before = sum(ERROR_COUNTS.values())
    for k in range(300):
        agg.handle_message(topics.owner_feedback("bella"), b"junk %d" % k)
    assert agg.counts["rejected.feedback"] == 300 and sum(ERROR_COUNTS.values()) - before == 300
    assert agg.store.db["rejections"].count == 256
    agg.flush_rejections()
    assert agg.store.db["rejections"].count == 300
