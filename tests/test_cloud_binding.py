"""A device speaks only for the individual(s) it is bound to; timestamps must be real times
(issue 11 item 5).

Unit tests call the aggregator's handler directly; one integration test goes through a private
mosquitto and the cloud built from its config (the issue's case: a device publishing, on its own
topic, an event for "bella", who is another device's, got a notify for bella). The readers
(``edgeloop alerts``, ``edgeloop quality``) are run as the real CLI on rows stored before the check.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ackdevice import AckDevice
from brokers import MosquittoBroker
from cloudsvc import serving
from recs import record_of

from cloud.aggregator.handler import Aggregator
from cloud.aggregator.service import AggregatorService
from cloud.config import CloudConfig, DeviceBinding
from cloud.notifiers import LogNotifier
from cloud.rules.notify import NotificationPolicy, handle_event
from cloud.store import bindings
from cloud.store.db import CloudStore
from shared import schemas, topics
from shared.config import ConfigError, from_dict
from shared.mqtt import MqttConfig

REPO = Path(__file__).resolve().parent.parent
EDGELOOP = REPO / ".venv" / "bin" / "edgeloop"
T0 = 1767571200.0  # 2026-01-05, the demo's start
EV_TS = T0 + 3 * 86400 + 7200
INC = "c" * 32


def event_body(ts: float = EV_TS, start_ts: float | None = None) -> dict[str, Any]:
    return {"start_ts": ts - 7200 if start_ts is None else start_ts, "ts": ts, "metrics": ["resting_hr", "activity"],
            "directions": [1, -1], "score": 0.9, "severity": "critical", "kind": "sustained",
            "baseline": [80.0, 30.0], "observed": [95.0, 12.0], "model_version": "m1", "detector_version": "d1"}


def summary(seq: int, ind: str, ts: float = T0) -> schemas.Record:
    return record_of(seq, "summary", ts, ind, {"day": "2026-01-05"})


def event(seq: int, ind: str, at: float = EV_TS, **body: Any) -> schemas.Record:
    return record_of(seq, "event", at, ind, {**event_body(at), **body})


def make(store: CloudStore | None = None,
         binding: bindings.Policy = "first_seen") -> tuple[Aggregator, list[tuple[str, bytes]], LogNotifier]:
    sent: list[tuple[str, bytes]] = []
    owners = LogNotifier()
    agg = Aggregator(store or CloudStore(), NotificationPolicy.from_toml(None), publish=lambda t, p: sent.append((t, p)),
                     notifiers=[owners], binding=binding)
    return agg, sent, owners


def repo(store: CloudStore) -> bindings.BindingRepository:
    return bindings.BindingRepository(store.backend)


def send(agg: Aggregator, dev: str, *recs: schemas.Record) -> None:
    agg.handle_message(topics.uplink(dev), schemas.encode(schemas.UplinkBatch(dev, tuple(recs), INC)))


def last_ack(sent: list[tuple[str, bytes]], dev: str) -> schemas.Ack:
    ack = schemas.decode([p for t, p in sent if t == topics.ack(dev)][-1])
    assert isinstance(ack, schemas.Ack)
    return ack


# ---- binding, through the handler ----------------------------------------------------------------

def test_another_devices_individual_is_refused_per_record_and_never_decided(any_store: CloudStore) -> None:
    """The issue's case: collar-666 publishes on its own topic an event for bella, who is
    collar-001's: no decision, no notify; the record is refused alone and named in the ack."""
    agg, sent, owners = make(any_store)
    send(agg, "collar-001", summary(1, "bella"))  # collar-001 is bella's (first seen)
    send(agg, "collar-666", summary(1, "rex"), event(2, "bella"), summary(3, "rex", T0 + 60))
    assert owners.payloads == [] and agg.decisions == [], "a notify for bella from a device not bound to her"
    ack = last_ack(sent, "collar-666")
    assert ack.seqs == (1, 3), "the batch's other records are stored"
    assert [r.seq for r in ack.rejected] == [2] and "bound to device collar-001" in ack.rejected[0].reason
    assert agg.counts["rejected.binding"] == 1 and agg.counts["records_rejected"] == 1
    assert [r["individual_id"] for r in agg.store.records()] == ["bella", "rex", "rex"]
    _, refused = repo(agg.store).listing()
    assert [(c["device_id"], c["individual_id"], c["records"]) for c in refused] == [("collar-666", "bella", 1)]
    # bella's own collar is still heard and decided
    send(agg, "collar-001", event(2, "bella"))
    assert [d.individual_id for d in agg.decisions] == ["bella"] and len(owners.payloads) == 1


def test_first_seen_binds_one_individual_and_a_different_one_waits_for_an_operator(any_store: CloudStore) -> None:
    agg, sent, _ = make(any_store)
    send(agg, "collar-001", summary(1, "bella"))
    send(agg, "collar-001", summary(2, "bella", T0 + 60), event(3, "daisy"))
    ack = last_ack(sent, "collar-001")
    assert ack.seqs == (2,) and [r.seq for r in ack.rejected] == [3]
    assert "--replace" in ack.rejected[0].reason and agg.decisions == []
    # the collar moved to daisy: the operator replaces the binding, the device's resend is taken
    assert repo(agg.store).bind("collar-001", "daisy", replace=True) == ["bella"]
    send(agg, "collar-001", event(4, "daisy"), summary(5, "bella", T0 + 120))
    ack = last_ack(sent, "collar-001")
    assert ack.seqs == (4,) and [r.seq for r in ack.rejected] == [5]
    assert [d.individual_id for d in agg.decisions] == ["daisy"]
    assert repo(agg.store).listing()[1][0]["individual_id"] == "bella", "the operator's list"


def test_one_group_of_batches_binds_and_refuses_as_one_at_a_time_would(any_store: CloudStore) -> None:
    """Batches handled together (the group commit reads the group's claims in two queries and
    binds in one statement) bind and refuse exactly as the same batches one at a time: the first
    device to claim bella takes her, the second in the same group is refused naming the holder,
    and a name that is another device's id (its own batch earlier in the group) is refused."""
    agg, sent, _ = make(any_store)

    def up(dev: str, *recs: schemas.Record) -> tuple[str, bytes]:
        return topics.uplink(dev), schemas.encode(schemas.UplinkBatch(dev, tuple(recs), INC))

    agg.handle_messages([up("collar-001", summary(1, "bella")), up("collar-002", summary(1, "bella")),
                         up("collar-003", summary(1, "collar-001")), up("collar-004", summary(1, "daisy"))])
    assert repo(any_store).bound_many(["collar-001", "collar-002", "collar-003", "collar-004"]) == {
        "collar-001": {"bella"}, "collar-002": set(), "collar-003": set(), "collar-004": {"daisy"}}
    two, three = last_ack(sent, "collar-002"), last_ack(sent, "collar-003")
    assert [r.seq for r in two.rejected] == [1] and "bound to device collar-001" in two.rejected[0].reason
    assert [r.seq for r in three.rejected] == [1] and "another device's id" in three.rejected[0].reason
    assert last_ack(sent, "collar-001").rejected == () and last_ack(sent, "collar-004").rejected == ()
    claims = any_store.backend.query("SELECT device_id, individual_id FROM binding_conflicts ORDER BY device_id")
    assert claims == [{"device_id": "collar-002", "individual_id": "bella"},
                      {"device_id": "collar-003", "individual_id": "collar-001"}]


def test_records_under_the_devices_own_id_never_take_its_binding(any_store: CloudStore) -> None:
    """An agent whose sensor named no valid individual files records under the device id; the
    name that arrives later is still bound first-seen."""
    agg, sent, _ = make(any_store)
    send(agg, "collar-001", summary(1, "collar-001"), summary(2, "bella", T0 + 60))
    assert last_ack(sent, "collar-001").seqs == (1, 2)
    assert repo(agg.store).bound_to("collar-001") == {"bella"}
    # and no other device can claim another device's id as its individual
    send(agg, "collar-002", summary(1, "collar-001"))
    assert [r.seq for r in last_ack(sent, "collar-002").rejected] == [1]


def test_provisioned_policy_takes_only_provisioned_devices(any_store: CloudStore) -> None:
    agg, sent, owners = make(any_store, "provisioned")
    assert repo(agg.store).provision([("collar-001", ["bella"])]) == 1
    assert repo(agg.store).provision([("collar-001", ["bella", "bella-pup"])]) == 1, "bella's binding is not new"
    send(agg, "collar-001", event(1, "bella"), summary(2, "bella-pup"))
    send(agg, "collar-009", summary(1, "rex"))
    assert last_ack(sent, "collar-001").seqs == (1, 2) and len(owners.payloads) == 1
    ack = last_ack(sent, "collar-009")
    assert ack.seqs == () and "not provisioned" in ack.rejected[0].reason


def test_devices_tables_in_the_cloud_config_are_checked() -> None:
    cfg = from_dict(CloudConfig, {"binding": "provisioned",
                                  "devices": [{"device_id": "collar-001", "individuals": ["bella"]}]})
    assert cfg.devices == (DeviceBinding("collar-001", ("bella",)),)
    with pytest.raises(ConfigError, match="individual id 'Bella Smith' is invalid"):
        from_dict(CloudConfig, {"devices": [{"device_id": "collar-001", "individuals": ["Bella Smith"]}]})
    with pytest.raises(ConfigError, match="needs at least one individual"):
        from_dict(CloudConfig, {"devices": [{"device_id": "collar-001"}]})


def test_edgeloop_bind_cli(tmp_path: Path) -> None:
    db = tmp_path / "cloud.db"
    agg = Aggregator(CloudStore(db), NotificationPolicy.from_toml(None))
    send(agg, "collar-001", summary(1, "bella"), summary(2, "daisy", T0 + 60))
    agg.store.close()

    def edgeloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EDGELOOP), "bind", "--db", str(db), *args], capture_output=True, text=True,
                              timeout=60, cwd=str(REPO))

    listed = edgeloop("--list")
    assert listed.returncode == 0 and "collar-001" in listed.stdout and "refused claims (1)" in listed.stdout
    done = edgeloop("--device", "collar-001", "--individual", "daisy", "--replace")
    assert done.returncode == 0 and "unbound from bella" in done.stdout, done.stderr
    bad = edgeloop("--device", "collar-001", "--individual", "Daisy Duck")
    assert bad.returncode == 2 and "individual id 'Daisy Duck' is invalid" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert edgeloop("--list", "--db", str(tmp_path / "nope.db")).returncode == 2
    assert not (tmp_path / "nope.db").exists()
    store = CloudStore(db)
    assert repo(store).bound_to("collar-001") == {"daisy"} and repo(store).listing()[1] == []


def test_the_dashboard_lists_refused_claims_for_the_operator(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cloud.aggregator.inbox import FairInbox
    from cloud.ops.broker_sys import BrokerSys
    from cloud.ops.web import create_app

    db = tmp_path / "cloud.db"
    agg = Aggregator(CloudStore(db), NotificationPolicy.from_toml(None))
    send(agg, "collar-001", summary(1, "bella"))
    send(agg, "collar-666", event(1, "bella"), event(2, "bella", EV_TS + 60))
    svc = SimpleNamespace(agg=agg, broker_sys=BrokerSys(), received=0, client_id="edgeloop-test",
                          connected=SimpleNamespace(is_set=lambda: True), inbox=FairInbox())
    page = create_app(svc, str(db)).test_client().get("/", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert page.status_code == 200
    (claims,) = re.findall(r'<table id="claims">.*?</table>', page.text, re.S)
    assert "collar-666" in claims and ">bella<" in claims and '"num">2<' in claims
    assert "bound to device collar-001" in claims


# ---- timestamps --------------------------------------------------------------------------------

@pytest.mark.parametrize(("ts", "body", "says"), [
    (32_503_680_000.0, {}, "after the cloud's clock"),  # year 3000
    (1e300, {}, "is not a time"),
    (EV_TS, {"start_ts": 1e300}, "body.start_ts"),
    (EV_TS, {"ts": 32_503_680_000.0}, "body.ts"),
    (86_400.0 * 3, {}, "before 2000-01-01"),
    (time.time() + 3 * 86400, {}, "after the cloud's clock"),
])
def test_impossible_timestamps_are_refused_per_record(ts: float, body: dict[str, Any], says: str) -> None:
    agg, sent, owners = make()
    send(agg, "collar-001", summary(1, "bella"), event(2, "bella", ts, **body), event(3, "bella"))
    ack = last_ack(sent, "collar-001")
    assert ack.seqs == (1, 3) and [r.seq for r in ack.rejected] == [2] and says in ack.rejected[0].reason
    assert agg.counts["rejected.timestamp"] == 1
    assert [d.alert_id for d in agg.decisions] == [f"collar-001:{INC}:3"]


def test_a_clock_a_few_hours_ahead_is_believed() -> None:
    agg, sent, _ = make()
    send(agg, "collar-001", summary(1, "bella", time.time() + 6 * 3600))
    assert last_ack(sent, "collar-001").seqs == (1,)


def _store_with_impossible_alerts(db: Path) -> None:
    """Alerts as an older cloud stored them (no timestamp check): year 3000 and 1e300."""
    store = CloudStore(db)
    policy = NotificationPolicy.from_toml(None)
    good = event(1, "bella")
    for seq, ts in ((2, 32_503_680_000.0), (3, 1e300)):
        rec = record_of(seq, "event", ts, "bella", event_body(ts))
        store.store_batch(schemas.UplinkBatch("collar-001", (rec,)))
        handle_event(store, policy, "collar-001", rec)
    store.store_batch(schemas.UplinkBatch("collar-001", (good,)))
    handle_event(store, policy, "collar-001", good)
    store.close()


def test_alerts_and_quality_survive_old_rows_with_impossible_times(tmp_path: Path) -> None:
    """Before: ``edgeloop alerts`` ended in OverflowError, ``quality`` spanned 10^300 days."""
    db = tmp_path / "cloud.db"
    _store_with_impossible_alerts(db)
    alerts = subprocess.run([str(EDGELOOP), "alerts", "--db", str(db), "--individual", "bella"],
                            capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert alerts.returncode == 0 and "Traceback" not in alerts.stderr, alerts.stderr
    assert "2 alert(s) stored with an impossible time" in alerts.stderr
    assert len(alerts.stdout.splitlines()) == 3 and "2026-01-08 02:00" in alerts.stdout
    quality = subprocess.run([str(EDGELOOP), "quality", "--db", str(db)], capture_output=True, text=True,
                             timeout=60, cwd=str(REPO))
    assert quality.returncode == 0 and "Traceback" not in quality.stderr, quality.stderr
    assert "quality.alerts_skipped" in quality.stderr
    (row,) = [ln for ln in quality.stdout.splitlines() if ln.startswith("m1")]
    assert row.split()[1:5] == ["2026-01-08", "02:00", "0.0", "1"], row  # the plausible alert alone
    # Home Assistant's states (the latest alert's time) read the same rows
    from cloud.ops.homeassistant import individual_states
    from cloud.store.read_model import ReadModel

    store = CloudStore(db)
    assert individual_states(ReadModel(store.backend))["bella"]["last_alert_at"] is None  # its latest notified: year 3000


# ---- through a real broker ---------------------------------------------------------------------

@pytest.fixture
def cloud(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[tuple[AggregatorService, LogNotifier]]:
    owners = LogNotifier()
    cfg = CloudConfig(db=str(tmp_path / "cloud.db"), mqtt=MqttConfig(url=mosquitto.url),
                      devices=(DeviceBinding("collar-001", ("bella",)),))
    with serving(cfg, mosquitto, [owners], drain=False) as svc:
        yield svc, owners


class Device(AckDevice):
    """A bare MQTT device of this file's incarnation; ``send`` returns the ack (or fails the test)."""

    def __init__(self, url: str, device_id: str) -> None:
        super().__init__(url, device_id, INC)

    def send(self, *recs: schemas.Record, timeout: float = 10.0) -> schemas.Ack:
        got = self.publish(*recs, timeout=timeout)
        assert got is not None, f"{self.device_id}: no ack"
        return got[1]


@pytest.mark.timeout(60)
def test_through_the_broker_no_notify_for_an_individual_bound_elsewhere(
        mosquitto: MosquittoBroker, cloud: tuple[AggregatorService, LogNotifier]) -> None:
    svc, owners = cloud
    intruder, collar = Device(mosquitto.url, "collar-666"), Device(mosquitto.url, "collar-001")
    try:
        ack = intruder.send(event(1, "bella"))
        assert ack.seqs == () and "bound to device collar-001" in ack.rejected[0].reason
        ack = collar.send(event(1, "bella"))  # bella's provisioned collar: stored, decided, notified
        assert ack.seqs == (1,) and ack.rejected == ()
    finally:
        intruder.close()
        collar.close()
    deadline = time.monotonic() + 5
    while not owners.payloads and time.monotonic() < deadline:
        time.sleep(0.05)
    # (the wall clock is long past the event: a reminder for the same alert may follow)
    assert {p["alert_id"] for p in owners.payloads} == {f"collar-001:{INC}:1"}, json.dumps(owners.payloads)[:500]
    assert svc.agg.counts["rejected.binding"] == 1


# ---- the real agent ----------------------------------------------------------------------------

def write_trace(path: Path, index: int, days: float) -> Path:
    from firmware_sim.collar import CollarSim
    from firmware_sim.scenario import DEMO_START, default_fleet

    sim = CollarSim(default_fleet(5, days)[index], DEMO_START, days)
    with open(path, "wb") as f:
        for _, chunk in sim.chunks():
            f.write(chunk)
        f.write(sim.end_frame())
    return path


def run_agent(trace: Path, state: Path, url: str, device_id: str) -> dict[str, Any]:
    p = subprocess.run([str(EDGELOOP), "agent", "--source", str(trace), "--state-dir", str(state), "--device-id",
                        device_id, "--broker", url, "--exit-on-eof", "--drain-timeout", "30"],
                       capture_output=True, text=True, timeout=180, cwd=str(REPO))
    assert p.returncode == 0, p.stderr[-3000:]
    return next(json.loads(x)["final"] for x in p.stdout.splitlines() if x.startswith('{"final"'))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_real_agent_replaying_bellas_collar_under_another_id_is_heard_for_nothing(
        tmp_path: Path, mosquitto: MosquittoBroker, cloud: tuple[AggregatorService, LogNotifier]) -> None:
    """The agent on bella's 8-day trace (an illness the cloud alerts on) as collar-666: every
    record refused, moved aside on the device, no notify; as her own collar-001: notified."""
    svc, owners = cloud
    trace = write_trace(tmp_path / "bella.bin", 0, 8.0)
    intruder = run_agent(trace, tmp_path / "intruder", mosquitto.url, "collar-666")
    made = sum(v for k, v in intruder["outbox"].items() if k.startswith("appended."))
    refused = sum(v for k, v in intruder["outbox"].items() if k.startswith("rejected."))
    assert intruder["individual_id"] == "bella" and made >= 8 and intruder["pending"] == 0
    assert refused == made, f"{refused} of {made} records moved aside on the device"
    rows = svc.agg.store.backend.execute("SELECT COUNT(*) FROM records WHERE device_id = 'collar-666'").fetchone()[0]
    assert rows == 0 and owners.payloads == [], "the cloud kept or notified what collar-666 said of bella"
    assert svc.agg.counts["rejected.binding"] == made
    own = run_agent(trace, tmp_path / "own", mosquitto.url, "collar-001")
    assert own["pending"] == 0 and not any(k.startswith("rejected.") and v for k, v in own["outbox"].items())
    assert owners.payloads and {p["device_id"] for p in owners.payloads} == {"collar-001"}
