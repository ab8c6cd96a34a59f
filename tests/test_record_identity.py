"""Record identity and per-record refusal, end to end (issue 11 items 1 and 2).

Real ``edgeloop agent`` processes on simulated collar traces, a private mosquitto, the cloud
aggregator on a SQLite file:

- a device whose state is reset (new SD card, factory reset) starts its sequence numbers at 1
  again; its new records are stored, not taken for duplicates of the old ones (the identity is
  ``(device_id, incarnation, seq)``) and the cloud logs ``aggregator.new_incarnation``;
- a bad ``individual_id`` in the device-info frame ("Bella Smith") is refused at the edge,
  counted, and the records are filed under the device id instead;
- a record refused for good (here: a row an older agent queued with that bad id; the device's own
  check of each record before it is sent, the cloud's check, refuses it first) is moved aside on
  the device (kept, counted, in the report), and everything else still flows. The cloud's
  refusal of a record, named in its ack, is tested in tests/test_aggregator.py and
  tests/test_agent.py (both ends of the ack).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import MosquittoBroker
from cloudsvc import serving

from cloud.aggregator.service import AggregatorService
from cloud.config import CloudConfig
from firmware_sim.collar import CollarSim
from firmware_sim.scenario import DEMO_START, default_fleet
from shared.mqtt import MqttConfig

REPO = Path(__file__).resolve().parent.parent
EDGELOOP = REPO / ".venv" / "bin" / "edgeloop"
DAY = 86400.0


def write_trace(path: Path, days: float, start: float, individual_id: str | None = None) -> Path:
    ind = default_fleet(5, days)[4]  # daisy: one-off excitement only, a quiet collar
    if individual_id is not None:
        ind = dataclasses.replace(ind, individual_id=individual_id)
    sim = CollarSim(ind, start, days)
    with open(path, "wb") as f:
        for _, chunk in sim.chunks():
            f.write(chunk)
        f.write(sim.end_frame())
    return path


def run_agent(trace: Path, state: Path, url: str, device_id: str, drain: float = 20.0) -> dict[str, Any]:
    """The real CLI agent on a trace until its end; returns its final report."""
    p = subprocess.run(
        [str(EDGELOOP), "agent", "--source", str(trace), "--state-dir", str(state), "--device-id", device_id,
         "--broker", url, "--exit-on-eof", "--drain-timeout", str(drain)],
        capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert p.returncode == 0, p.stderr[-3000:]
    return next(json.loads(x)["final"] for x in p.stdout.splitlines() if x.startswith('{"final"'))


def appended(report: dict[str, Any]) -> int:
    return sum(v for k, v in report["outbox"].items() if k.startswith("appended."))


@pytest.fixture
def cloud(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[AggregatorService]:
    with serving(CloudConfig(db=str(tmp_path / "cloud.db"), mqtt=MqttConfig(url=mosquitto.url)), mosquitto) as svc:
        yield svc


def stored(svc: AggregatorService, device_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in svc.agg.store.db.query(
        "SELECT * FROM records WHERE device_id = ? ORDER BY ts, seq", [device_id])]


@pytest.mark.timeout(240)
def test_a_reset_device_keeps_every_record_of_its_second_life(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: AggregatorService,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud.aggregator.handler")
    state = tmp_path / "state"
    first = run_agent(write_trace(tmp_path / "a.bin", 6, DEMO_START), state, mosquitto.url, "collar-r")
    # the reset: new SD card, same device id; sequence numbers start at 1 again
    for f in state.iterdir():
        if f.is_file():
            f.unlink()
    second = run_agent(write_trace(tmp_path / "b.bin", 6, DEMO_START + 10 * DAY), state, mosquitto.url,
                       "collar-r")
    n1, n2 = appended(first), appended(second)
    assert n1 >= 6 and n2 >= 6 and first["pending"] == 0 and second["pending"] == 0
    rows = stored(cloud, "collar-r")
    later = [r for r in rows if r["ts"] >= DEMO_START + 10 * DAY]
    assert len(later) == n2, f"{n2 - len(later)} of {n2} records of the second life lost"
    assert len(rows) == n1 + n2
    incarnations = {r["incarnation"] for r in rows}
    assert len(incarnations) == 2 and all(len(i) == 32 for i in incarnations)
    assert first["incarnation"] != second["incarnation"] and second["incarnation"] in incarnations
    news = [r for r in caplog.records if r.getMessage() == "aggregator.new_incarnation"]
    assert [r.incarnation for r in news] == [first["incarnation"], second["incarnation"]]  # type: ignore[attr-defined]


@pytest.mark.timeout(240)
def test_a_bad_individual_id_from_the_sensor_is_refused_at_the_edge(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: AggregatorService) -> None:
    trace = write_trace(tmp_path / "bad.bin", 3, DEMO_START, individual_id="Bella Smith")
    report = run_agent(trace, tmp_path / "state", mosquitto.url, "collar-b", drain=15)
    assert report["pending"] == 0, "records stuck behind a bad individual id"
    assert report["ingest"]["individual_id_rejected"] == 1
    assert report["individual_id"] == "", "no individual was learnt from a bad device-info frame"
    rows = stored(cloud, "collar-b")
    assert len(rows) == appended(report) >= 3
    assert {r["individual_id"] for r in rows} == {"collar-b"}, "filed under the device id"
    assert cloud.agg.counts["rejected"] == 0 and cloud.agg.counts["records_rejected"] == 0


@pytest.mark.timeout(240)
def test_a_record_refused_for_good_is_moved_aside_and_never_blocks_the_rest(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: AggregatorService) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # an older agent left a row with a bad individual id queued in the outbox
    from device.outbox import Outbox

    ob = Outbox(state / "outbox.db")
    poisoned = ob.append("summary", "Bella Smith", DEMO_START - 60, {"day": "2026-01-04"})
    good = ob.append("summary", "daisy", DEMO_START - 30, {"day": "2026-01-04"})
    ob.close()
    report = run_agent(write_trace(tmp_path / "t.bin", 3, DEMO_START), state, mosquitto.url, "collar-p")
    assert report["pending"] == 0
    assert report["rejected"]["count"] == 1
    assert report["rejected"]["latest"][0]["seq"] == poisoned
    reason = report["rejected"]["latest"][0]["reason"]
    assert reason.startswith("refused on the device") and "Bella Smith" in reason
    assert report["outbox"]["rejected.summary"] == 1
    seqs = [r["seq"] for r in stored(cloud, "collar-p")]
    assert good in seqs and poisoned not in seqs
    assert len(seqs) == appended(report) - 1, "every other record stored (the good old one included)"
    assert cloud.agg.counts["records_rejected"] == 0, "never sent"
    with sqlite3.connect(state / "outbox.db") as con:  # kept on the device, never sent again
        kept = con.execute("SELECT seq, individual_id, reason FROM rejected").fetchall()
    assert [(s, i) for s, i, _ in kept] == [(poisoned, "Bella Smith")]
