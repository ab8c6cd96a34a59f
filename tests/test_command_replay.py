"""Replay protection of downlink commands does not rest on one counter (issue 11, item 7).

Unit: the pure check (device/commands.verify_command) refuses expired commands, commands for
another incarnation and commands from an older epoch; the cloud's re-sync answers only when it is
behind. Integration (real mosquitto, real SQLite, the agent and the cloud): after the device's
state is wiped, a captured signed command is refused; after the cloud's database is restored from
a backup, the device asks for a re-sync and the cloud's next commands are accepted again."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from brokers import Collector, MosquittoBroker

from cloud.aggregator.service import AggregatorService
from cloud.commands import Commander
from cloud.config import CloudConfig
from cloud.run import build
from cloud.store.db import CloudStore
from device.agent import Agent
from device.commands import CommandHandler, CommandRefused, Position, verify_command
from device.config import AgentConfig
from shared import schemas, topics
from shared.command_signing import sign_command
from shared.mqtt import MqttConfig
from shared.records import CommandReport
from shared.signing import generate_keypair, save_private_key, save_public_key

INC = "0123456789abcdef0123456789abcdef"
NEW_INC = "fedcba9876543210fedcba9876543210"
PRIV, PUB = generate_keypair()


def cmd(counter: int, *, epoch: int = 0, expires_at: float = 2000.0, incarnation: str = INC,
        name: str = "config") -> bytes:
    return schemas.encode(sign_command(PRIV, schemas.Command("dev-1", f"c{epoch}-{counter}", name, counter, {},
                                                             expires_at=expires_at, epoch=epoch,
                                                             incarnation=incarnation)))


ORIGIN = Position()


def check(payload: bytes, *, now: float = 1000.0, last: Position = ORIGIN, incarnation: str = INC
          ) -> schemas.Command:
    return verify_command(payload, device_id="dev-1", public_key=PUB, incarnation=incarnation, now=now, last=last)


# ----------------------------------------------------------------------------- the pure check

def test_a_fresh_command_above_the_last_position_passes() -> None:
    assert check(cmd(3), last=Position(0, 2)).counter == 3
    assert check(cmd(1, epoch=2), last=Position(1, 500)).epoch == 2, "a new epoch restarts the counter"


def test_an_expired_command_is_refused() -> None:
    with pytest.raises(CommandRefused, match="expired") as exc:
        check(cmd(3, expires_at=999.0), now=1000.0)
    assert not exc.value.resync


def test_a_command_for_another_incarnation_is_refused() -> None:
    """After a state wipe the counter is back at zero: the incarnation is what refuses the old
    commands (a counter alone would accept them again)."""
    with pytest.raises(CommandRefused, match="incarnation") as exc:
        check(cmd(7), incarnation=NEW_INC, last=ORIGIN)
    assert not exc.value.resync


def test_an_older_epoch_is_refused_whatever_its_counter() -> None:
    with pytest.raises(CommandRefused, match="older epoch") as exc:
        check(cmd(10**6, epoch=1), last=Position(2, 1))
    assert exc.value.resync, "a fresh, well-signed command below the position asks for a re-sync"


def test_a_counter_not_above_the_last_is_refused_and_asks_for_a_resync() -> None:
    for counter in (5, 4):
        with pytest.raises(CommandRefused, match="re-sync asked") as exc:
            check(cmd(counter), last=Position(0, 5))
        assert exc.value.resync and exc.value.command_id == f"c0-{counter}"


def test_a_v1_command_is_refused_even_when_well_signed() -> None:
    v1 = sign_command(PRIV, schemas.Command("dev-1", "old", "config", 99, {}, v=1))
    with pytest.raises(CommandRefused, match="v1"):
        check(schemas.encode(v1))


def test_the_signature_covers_expiry_epoch_and_incarnation() -> None:
    good = schemas.decode(cmd(3))
    assert isinstance(good, schemas.Command)
    for forged in (replace(good, expires_at=10**9), replace(good, epoch=9), replace(good, incarnation=NEW_INC)):
        with pytest.raises(CommandRefused, match="signature invalid"):
            check(schemas.encode(forged), incarnation=forged.incarnation)


def test_the_handler_reports_the_position_with_a_resync_request() -> None:
    pos = [Position(0, 5)]
    h = CommandHandler("dev-1", PUB, lambda: pos[0], lambda p: pos.__setitem__(0, p), incarnation=INC,
                       now=lambda: 1000.0)
    h.register("config", lambda args: {})
    cid, ok, detail, data = h.handle(cmd(4))
    assert (cid, ok) == ("", False) and data == {"resync": {"epoch": 0, "counter": 5}, "refused": "c0-4"}
    assert h.handle(cmd(1, epoch=1, name="resync"))[1:3] == (True, "ok")
    assert pos[0] == Position(1, 1) and h.counts["resynced"] == 1 and h.counts["resync_asked"] == 1
    assert h.handle(cmd(2, epoch=1))[1] is True


# ----------------------------------------------------------------------------- the cloud's side

def _commander(sent: list[bytes], now: float = 1000.0, store: CloudStore | None = None) -> Commander:
    store = store or CloudStore()
    store.note_incarnation("dev-1", INC, 1)
    return Commander(store, PRIV, lambda _t, p: sent.append(p), lambda: now, ttl=600.0)


def test_the_cloud_binds_each_command_to_the_incarnation_and_an_expiry(any_store: CloudStore) -> None:
    sent: list[bytes] = []
    c = _commander(sent, store=any_store)
    out = c.send("dev-1", "config", {})
    assert (out.incarnation, out.expires_at, out.epoch, out.counter) == (INC, 1600.0, 0, 1)
    c.store.note_incarnation("dev-1", NEW_INC, 1)  # the device's state was reset
    assert c.send("dev-1", "config", {}).incarnation == NEW_INC
    # its status names the incarnation it runs now: an older one back (a restored SD card) included
    c.store.set_device_state("dev-1", "online", 1000.0, INC)
    assert c.send("dev-1", "config", {}).incarnation == INC


def test_the_cloud_resyncs_only_when_it_is_behind(any_store: CloudStore) -> None:
    sent: list[bytes] = []
    c = _commander(sent, store=any_store)
    for _ in range(3):
        c.send("dev-1", "config", {})
    assert c.resync("dev-1", 0, 2) is None, "the cloud is ahead: the refused command was a replay"
    assert c.resync("dev-1", 0, 3) is None, "level: a redelivered command; the next one passes anyway"
    assert c.on_report("dev-1", CommandReport("", False, "x", {"resync": {"epoch": 0, "counter": 9}})) is not None
    assert c.position("dev-1") == (1, 1)
    assert json.loads(sent[-1])["name"] == "resync" and json.loads(sent[-1])["epoch"] == 1
    assert c.send("dev-1", "config", {}).counter == 2
    # a malformed request (or an epoch that could never be answered) is refused, not acted on
    for ask in ({"epoch": "1", "counter": 0}, {"epoch": 2**50, "counter": 0}, "resync"):
        assert c.on_report("dev-1", CommandReport("", False, "x", {"resync": ask})) is None
    assert c.on_report("dev-1", CommandReport("c", True, "ok", {"resync": {"epoch": 9, "counter": 9}})) is None
    kept = c.repo.sent("dev-1")
    assert [(r["name"], r["epoch"], r["counter"]) for r in kept] == [
        ("config", 0, 1), ("config", 0, 2), ("config", 0, 3), ("resync", 1, 1), ("config", 1, 2)]
    assert kept[3]["reason"] == "re-sync: device at 0/9" and c.repo.count() == 5


def test_the_device_keeps_its_position_and_reads_the_old_counter(tmp_path: Path) -> None:
    a = Agent(AgentConfig(device_id="dev-1", state_dir=str(tmp_path / "s")), connect=False)
    a.outbox.put("command_counter", b"7")  # saved by an agent before commands v2
    assert a.state.load_position() == Position(0, 7)
    a.state.save_position(Position(3, 4))
    b = Agent(a.cfg, connect=False)
    assert b.state.load_position() == Position(3, 4)


# ----------------------------------------------------------------------------- end to end

class Loop:
    """The cloud (build(): real SQLite) and one agent in this process, over a real mosquitto."""

    def __init__(self, tmp: Path, broker: MosquittoBroker) -> None:
        self.tmp, self.broker = tmp, broker
        save_private_key(tmp / "cloud.key", PRIV)
        save_public_key(tmp / "cloud.pub", PUB)
        self.db = tmp / "cloud.db"
        self.mq = MqttConfig(url=broker.url, reconnect_min=0.2, reconnect_max=1.0)
        self.svc: AggregatorService | None = None
        self.stop_cloud = threading.Event()
        self.agent: Agent | None = None

    def start_cloud(self) -> AggregatorService:
        self.svc = build(CloudConfig(db=str(self.db), mqtt=self.mq, signing_key=str(self.tmp / "cloud.key")),
                         notifiers=[])
        self.svc.start()
        assert self.svc.connected.wait(10)
        self.stop_cloud = threading.Event()
        self.thread = threading.Thread(target=self.svc.serve, args=(self.stop_cloud,), daemon=True)
        self.thread.start()
        return self.svc

    def stop_cloud_now(self) -> None:
        assert self.svc is not None
        self.stop_cloud.set()
        self.thread.join(10)
        self.svc.stop()
        self.svc.agg.store.close()
        self.svc = None

    def start_agent(self) -> Agent:
        self.agent = Agent(AgentConfig(device_id="collar-1", individual_id="bella", state_dir=str(self.tmp / "dev"),
                                       cloud_public_key=str(self.tmp / "cloud.pub"), mqtt=self.mq))
        self.agent.uplink.start()  # type: ignore[union-attr]
        agent = self.agent
        assert self.wait(lambda: self.commander.incarnation("collar-1") == agent.outbox.incarnation), \
            "the cloud learns the device's incarnation from its status"
        return agent

    def stop_agent(self) -> None:
        assert self.agent is not None
        self.agent.uplink.stop()  # type: ignore[union-attr]
        self.agent.outbox.close()
        self.agent = None

    @property
    def commander(self) -> Commander:
        assert self.svc is not None and self.svc.agg.commander is not None
        return self.svc.agg.commander  # type: ignore[no-any-return]

    def wait(self, pred: Callable[[], bool], timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.agent is not None:
                self.agent.pump()
            if pred():
                return True
            time.sleep(0.02)
        return False

    def reports(self) -> list[dict[str, Any]]:
        """The command reports the cloud stored, in the device's order (read on a connection of our own)."""
        with sqlite3.connect(self.db) as con:
            rows = con.execute("SELECT body FROM records WHERE kind = 'report' ORDER BY rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    def send_and_wait(self, n_reports: int, name: str = "collect_more") -> dict[str, Any]:
        self.commander.send("collar-1", name, {"minutes": 1} if name == "collect_more" else {})
        assert self.wait(lambda: len(self.reports()) >= n_reports), self.reports()
        return self.reports()[n_reports - 1]


@pytest.fixture
def loop(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Loop]:
    lp = Loop(tmp_path, mosquitto)
    try:
        yield lp
    finally:
        if lp.agent is not None:
            lp.stop_agent()
        if lp.svc is not None:
            lp.stop_cloud_now()


def test_after_a_state_wipe_a_captured_command_is_refused(loop: Loop, mosquitto: MosquittoBroker) -> None:
    loop.start_cloud()
    agent = loop.start_agent()
    old_incarnation = agent.outbox.incarnation
    captured: list[bytes] = []
    spy = Collector.connect(mosquitto, "spy")  # an eavesdropper records the signed command
    try:
        spy.subscribe(topics.commands("collar-1"))
        assert loop.send_and_wait(1)["ok"] is True
        assert loop.wait(lambda: len(spy.messages) == 1)
        captured.append(spy.messages[0][1])
        loop.stop_agent()
        shutil.rmtree(loop.tmp / "dev")  # factory reset: a new outbox, its counter at zero
        agent = loop.start_agent()
        assert agent.outbox.incarnation != old_incarnation
        spy.publish_many([(topics.commands("collar-1"), captured[0])])  # the replay
        refused = loop.wait(lambda: len(loop.reports()) >= 2) and loop.reports()[1]
        assert refused and refused["ok"] is False and "incarnation" in refused["detail"], loop.reports()
        assert agent.commands.counts["ok.collect_more"] == 0, "the old command did not run again"
        # the cloud's own next command is for the new incarnation: accepted
        assert loop.send_and_wait(3)["ok"] is True
        assert agent.commands.counts["ok.collect_more"] == 1
    finally:
        spy.close()


def test_after_the_cloud_db_is_restored_the_device_resyncs(loop: Loop) -> None:
    loop.start_cloud()
    agent = loop.start_agent()
    assert loop.send_and_wait(1)["ok"] is True
    backup = loop.tmp / "backup.db"
    with sqlite3.connect(loop.db) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)  # the operator's nightly backup: the device's counter at 1
    for n in (2, 3):
        assert loop.send_and_wait(n)["ok"] is True
    loop.stop_cloud_now()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{loop.db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, loop.db)  # restored: the cloud's counter for the device is back at 1
    svc = loop.start_cloud()
    assert loop.commander.position("collar-1") == (0, 1)
    n = len(loop.reports())  # what the backup held (the reports of commands 2 and 3 went with the restore)
    # the next command (counter 2) is below what the device accepted (3): refused, re-sync asked,
    # the cloud answers with a signed resync in a new epoch
    loop.commander.send("collar-1", "collect_more", {"minutes": 1})
    assert loop.wait(lambda: len(loop.reports()) >= n + 2), loop.reports()
    refused, resynced = loop.reports()[n:n + 2]
    assert refused["ok"] is False and refused["data"]["resync"] == {"epoch": 0, "counter": 3}, refused
    assert resynced["ok"] is True and resynced["data"] == {"epoch": 1}, resynced
    assert svc.agg.counts["commands.resync"] == 1 and agent.commands.counts["resynced"] == 1
    # and from now on the cloud's commands are accepted again
    assert loop.send_and_wait(n + 3)["ok"] is True
    assert loop.send_and_wait(n + 4)["ok"] is True
    assert agent.commands.counts["ok.collect_more"] == 5
    assert loop.commander.position("collar-1") == (1, 3)
