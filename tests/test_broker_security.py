"""Device identity at the broker: per-device credentials, pattern ACLs, TLS client certificates.

The ACL under test is docs/mosquitto/acl (the production file), loaded verbatim, so the
documented set-up is the tested one. A privileged observer subscribed to ``#`` and ``$SYS/#``
is the witness: a foreign publish "succeeds" if the observer sees it; a foreign subscription
"succeeds" if anything outside the device's own ack/cmd topics is delivered to it. Positive
controls (a device's own publish and its own ack subscription) prove the witness can see.
"""

from __future__ import annotations

import os
import random
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker

ACL_FILE = Path(__file__).resolve().parent.parent / "docs" / "mosquitto" / "acl"
DEVICES = [f"dev-{i:03d}" for i in range(8)]
PASSWORDS = {d: f"pw-{d}-{i}" for i, d in enumerate(DEVICES)}
CLOUD, OBSERVER = "edgeloop-cloud", "observer"
ROOT = "edgeloop/v1"
DEVICE_WRITE = ("up", "status", "reply")
DEVICE_READ = ("ack", "cmd")
N_ATTEMPTS = 1000
N_CONNECTIONS = 20

OBSERVER_ACL = f"\n# test-only witness\nuser {OBSERVER}\ntopic read #\ntopic read $SYS/#\n"


def _acl_text() -> str:
    return ACL_FILE.read_text() + OBSERVER_ACL


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> MosquittoBroker:
    from conftest import require_mosquitto

    require_mosquitto()
    users = dict(PASSWORDS)
    users[CLOUD] = "cloud-pw"
    users[OBSERVER] = "observer-pw"
    broker = MosquittoBroker(
        tmp_path_factory.mktemp("secure"), users=users, acl=_acl_text(), allow_anonymous=False,
        tls=True, require_certificate=True, use_identity_as_username=True,
        extra_conf="sys_interval 1",
    ).start()
    yield broker  # type: ignore[misc]
    broker.stop()


def _observer(broker: MosquittoBroker) -> Collector:
    obs = Collector.connect(broker, "observer", username=OBSERVER, password="observer-pw")
    assert not obs.subscribe("#")[0].is_failure  # type: ignore[attr-defined]
    assert not obs.subscribe("$SYS/#")[0].is_failure  # type: ignore[attr-defined]
    return obs


# --------------------------------------------------------------------------- attack generators

_ODD_CLIENT_IDS = ["", "+", "#", "$SYS", "a/b", "dev-000", "dev-001", "edgeloop-cloud-evil",
                   "observer-evil", "é✓", "x" * 23, "x" * 200, "%u", "%c", " ", "dev-000/#"]


def _own(dev: str, kind: str) -> str:
    return f"{ROOT}/dev/{dev}/{kind}"


def _attack_topic(rng: random.Random, dev: str) -> str:
    """A concrete (wildcard-free) topic the device must not publish on."""
    other = rng.choice([d for d in DEVICES if d != dev])
    kind = rng.choice(["up", "status", "reply", "ack", "cmd", "x", ""])
    choices = [
        _own(other, kind),                                   # another device's topic
        _own(dev, rng.choice(DEVICE_READ)),                  # impersonating the cloud to itself
        f"{ROOT}/dev/{dev}/up/extra",                        # below its own topic
        f"{ROOT}/dev/{dev}",                                 # its own root
        f"{ROOT}/dev/{dev.upper()}/up",                      # case variant of its id
        f"{ROOT}/dev/{dev}x/up",                             # prefix variant
        f"{ROOT}/owner/{rng.choice(['rex', 'bella'])}/{rng.choice(['alerts', 'feedback'])}",
        f"$SYS/broker/{rng.choice(['uptime', 'x'])}",
        "$share/edgeloop-cloud/" + _own(other, "up"),
        f"{ROOT}/dev//up",
        f"/{ROOT}/dev/{dev}/up",                             # leading slash: a different topic
        f"{ROOT}/dev/{dev}/../{other}/up",
        "".join(rng.choice("abc/$") for _ in range(rng.randint(1, 12))).replace("//", "/") or "z",
    ]
    return rng.choice(choices)


def _attack_filter(rng: random.Random, dev: str) -> str:
    other = rng.choice([d for d in DEVICES if d != dev])
    return rng.choice([
        "#", "+", "+/#", "+/+/+/+/+", f"{ROOT}/#", f"{ROOT}/dev/#", f"{ROOT}/dev/+/up",
        f"{ROOT}/dev/+/cmd", f"{ROOT}/dev/+/+", f"{ROOT}/dev/{other}/#", f"{ROOT}/dev/{other}/cmd",
        f"{ROOT}/dev/{other}/ack", f"{ROOT}/dev/{dev}/up", f"{ROOT}/dev/{dev}/status",
        f"{ROOT}/owner/+/alerts", f"{ROOT}/owner/#", "$SYS/#", "$SYS/broker/+",
        f"$share/g/{ROOT}/dev/+/up", f"$share/edgeloop-cloud/{ROOT}/dev/+/up",
        f"{ROOT}/+/{other}/#", f"+/+/dev/{other}/+",
    ])


def _bait_topics() -> list[str]:
    """Topics the privileged side publishes on after the attackers subscribed."""
    baits = [_own(d, k) for d in DEVICES for k in (*DEVICE_WRITE, *DEVICE_READ)]
    baits += [f"{ROOT}/owner/rex/alerts", f"{ROOT}/owner/rex/feedback", "other/topic"]
    return baits


def _readable_by(dev: str) -> set[str]:
    return {_own(dev, k) for k in DEVICE_READ}


# --------------------------------------------------------------------------- the randomised run


def test_1000_randomised_cross_device_attempts_all_fail(secure_broker: MosquittoBroker) -> None:
    rng = random.Random(20261126)
    obs = _observer(secure_broker)
    cloud = Collector.connect(secure_broker, "edgeloop-cloud-1", username=CLOUD, password="cloud-pw")
    try:
        per_conn = N_ATTEMPTS // N_CONNECTIONS
        odd_ids = rng.sample(_ODD_CLIENT_IDS, k=len(_ODD_CLIENT_IDS))
        attackers: list[tuple[str, Collector]] = []
        pub_attempts = sub_attempts = pub_granted = n_dangerous = 0
        attack_tokens: set[bytes] = set()
        for c in range(N_CONNECTIONS):
            dev = rng.choice(DEVICES)
            # every connection gets a distinct client id (a repeated one would take the
            # earlier session over): the odd ones first, then plain ones
            cid = odd_ids[c] if c < len(odd_ids) else f"{dev}-{c}"
            att = Collector.connect(secure_broker, cid or "", username=dev, password=PASSWORDS[dev])
            attackers.append((dev, att))
            pubs: list[tuple[str, bytes]] = []
            for i in range(per_conn):
                if rng.random() < 0.6:
                    token = f"attack:{c}:{i}".encode()
                    attack_tokens.add(token)
                    pubs.append((_attack_topic(rng, dev), token))
                else:
                    sub_attempts += 1
                    att.subscribe(_attack_filter(rng, dev), qos=1)
            # the device's own legitimate subscription: a positive control for delivery
            att.subscribe(_own(dev, "ack"), qos=1)
            pub_attempts += len(pubs)
            codes = att.publish_many(pubs)
            pub_granted += sum(not rc.is_failure for rc in codes)  # type: ignore[attr-defined]
            # positive control: its own uplink is accepted and seen by the observer, except
            # that mosquitto denies everything to a client id holding '+' or '#'
            ok = att.publish_many([(_own(dev, "up"), f"legit:{c}".encode())])
            dangerous = any(ch in cid for ch in "+#")
            assert ok[0].is_failure == dangerous, (cid, ok)  # type: ignore[attr-defined]
            n_dangerous += dangerous
        assert pub_attempts + sub_attempts == N_ATTEMPTS

        # the cloud publishes on every device's ack/cmd (and owner topics): bait for subscribers
        bait = [(t, f"bait:{t}".encode()) for t in _bait_topics()]
        codes = cloud.publish_many([(t, p) for t, p in bait if t.endswith(("/ack", "/cmd", "/alerts"))])
        assert not any(rc.is_failure for rc in codes)  # type: ignore[attr-defined]
        time.sleep(2.5)  # let $SYS (sys_interval 1) tick twice, and deliveries settle

        seen_by_observer = {p for _, p, _, _ in obs.messages}
        leaked_pubs = attack_tokens & seen_by_observer
        foreign_deliveries = [
            (dev, t) for dev, att in attackers for t, _, _, _ in att.messages
            if t not in _readable_by(dev)
        ]
        own_ack_delivered = sum(
            any(t == _own(dev, "ack") for t, _, _, _ in att.messages) for dev, att in attackers
        )
        legit_seen = sum(p.startswith(b"legit:") for p in seen_by_observer)
        sys_seen = sum(t.startswith("$SYS/") for t, _, _, _ in obs.messages)
        print(f"\nattempts: {pub_attempts} publishes + {sub_attempts} subscriptions = {N_ATTEMPTS}; "
              f"publishes granted by PUBACK: {pub_granted}; leaked to observer: {len(leaked_pubs)}; "
              f"foreign deliveries to attackers: {len(foreign_deliveries)}; "
              f"controls: own ack delivered {own_ack_delivered}/{N_CONNECTIONS}, "
              f"legit uplinks seen {legit_seen}/{N_CONNECTIONS} ({n_dangerous} connections with "
              f"'+'/'#' client ids denied everything), $SYS seen by observer {sys_seen}")
        # controls first, so a silent witness cannot pass the test
        assert legit_seen == N_CONNECTIONS - n_dangerous
        assert own_ack_delivered == N_CONNECTIONS - n_dangerous
        assert sys_seen > 0
        assert pub_granted == 0
        assert leaked_pubs == set()
        assert foreign_deliveries == []
    finally:
        for _, att in locals().get("attackers", []):
            att.close()
        cloud.close()
        obs.close()


def test_cloud_acl_reads_uplinks_and_writes_acks_only(secure_broker: MosquittoBroker) -> None:
    with _observer(secure_broker) as obs, Collector.connect(
        secure_broker, "cloud-x", username=CLOUD, password="cloud-pw"
    ) as cloud, Collector.connect(
        secure_broker, "dev-005", username="dev-005", password=PASSWORDS["dev-005"]
    ) as dev:
        assert not cloud.subscribe(f"$share/edgeloop-cloud/{ROOT}/dev/+/up")[0].is_failure  # type: ignore[attr-defined]
        dev.publish_many([(_own("dev-005", "up"), b"u1")])
        assert cloud.wait_for(1, 5), "cloud did not receive the uplink through its shared subscription"
        ok = cloud.publish_many([(_own("dev-005", "ack"), b"a"), (_own("dev-005", "cmd"), b"c")])
        assert not any(rc.is_failure for rc in ok)  # type: ignore[attr-defined]
        # the cloud must not forge device uplinks
        bad = cloud.publish_many([(_own("dev-005", "up"), b"forged"), ("$SYS/x", b"s")])
        assert all(rc.is_failure for rc in bad), bad  # type: ignore[attr-defined]
        time.sleep(0.5)
        assert b"forged" not in {p for _, p, _, _ in obs.messages}


# --------------------------------------------------------------------------- authentication


def _refused(broker: MosquittoBroker, **kw: object) -> object:
    c = Collector.connect(broker, "intruder", expect_ok=False, timeout=5, **kw)  # type: ignore[arg-type]
    try:
        assert c.connected.wait(5) or c.disconnected.wait(1), "no CONNACK and no disconnect"
        return c.connack
    finally:
        c.close()


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_anonymous_and_wrong_password_refused(secure_broker: MosquittoBroker, protocol: str) -> None:
    cases = {
        "anonymous": {},
        "wrong password": {"username": "dev-001", "password": "nope"},
        "empty password": {"username": "dev-001", "password": ""},
        "unknown user": {"username": "dev-999", "password": "pw"},
        "other device's password": {"username": "dev-001", "password": PASSWORDS["dev-002"]},
    }
    for name, kw in cases.items():
        rc = _refused(secure_broker, protocol=protocol, **kw)
        assert rc is not None and rc.is_failure, f"{name}: {rc}"  # type: ignore[attr-defined]
        # v5: 134 Bad user name or password / 135 Not authorized; v3.1.1: 4 or 5 mapped by paho
        assert int(rc.value) in (4, 5, 134, 135), f"{name}: {rc!r}"  # type: ignore[attr-defined]


def _tls_handshake_refused(broker: MosquittoBroker, pair: object | None) -> bool:
    """True if the TLS listener refuses the client (handshake error or no CONNACK success)."""
    try:
        c = Collector.connect(broker, "tls-intruder", tls=pair, use_tls=True,  # type: ignore[arg-type]
                              expect_ok=False, timeout=3)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    try:
        got = c.connected.wait(3)
        return not got or bool(c.connack.is_failure)  # type: ignore[union-attr]
    finally:
        c.close()


def test_tls_client_certificates(secure_broker: MosquittoBroker) -> None:
    good = secure_broker.client_cert("dev-003")
    with _observer(secure_broker) as obs, Collector.connect(
        secure_broker, "dev-003", tls=good
    ) as dev:
        ok = dev.publish_many([(_own("dev-003", "up"), b"tls-own")])
        bad = dev.publish_many([(_own("dev-004", "up"), b"tls-foreign"),
                                (_own("dev-003", "cmd"), b"tls-fake-cmd")])
        assert not ok[0].is_failure  # type: ignore[attr-defined]
        assert all(rc.is_failure for rc in bad), bad  # type: ignore[attr-defined]
        assert obs.wait_for(1, 5)
        time.sleep(0.5)
        payloads = {p for _, p, _, _ in obs.messages}
        assert b"tls-own" in payloads and not payloads & {b"tls-foreign", b"tls-fake-cmd"}
    assert _tls_handshake_refused(secure_broker, None), "TLS without a client cert was accepted"
    foreign = secure_broker.foreign_client_cert("dev-003")
    assert _tls_handshake_refused(secure_broker, foreign), "a foreign CA's client cert was accepted"


def test_client_id_of_another_device_does_not_steal_its_session(
    secure_broker: MosquittoBroker,
) -> None:
    victim = Collector.connect(secure_broker, "dev-006", username="dev-006",
                               password=PASSWORDS["dev-006"], clean_start=False,
                               session_expiry=600)
    victim.subscribe(_own("dev-006", "cmd"))
    victim.close()
    with Collector.connect(secure_broker, "cloud-y", username=CLOUD, password="cloud-pw") as cloud:
        cloud.publish_many([(_own("dev-006", "cmd"), b"secret-cmd")])
    thief = Collector.connect(secure_broker, "dev-006", username="dev-007",
                              password=PASSWORDS["dev-007"], clean_start=False, session_expiry=600)
    try:
        time.sleep(1.0)
        assert thief.messages == [], "a device received another device's queued command"
    finally:
        thief.close()


def test_acl_file_is_minimal() -> None:
    """Device pattern lines grant exactly publish on up/status/reply and read on ack/cmd."""
    lines = [ln.split() for ln in ACL_FILE.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    patterns = {(ln[1], ln[2]) for ln in lines if ln[0] == "pattern"}
    assert patterns == {("write", f"{ROOT}/dev/%u/{k}") for k in DEVICE_WRITE} | {
        ("read", f"{ROOT}/dev/%u/{k}") for k in DEVICE_READ}
    assert not any("#" in t and a != "read" for a, t in patterns)



# --------------------------------------------------------------------------- the documented set-up

DOCS = Path(__file__).resolve().parent.parent / "docs" / "mosquitto"


def _make_certs(etc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DOCS / "make-certs.sh"), *args], cwd=etc, capture_output=True, text=True)


@pytest.fixture
def prod_broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, Path]]:
    """docs/mosquitto/mosquitto.conf + acl + make-certs.sh, with paths and ports rewritten:
    (the broker, the folder with its certificates: dev-001, dev-002 and the cloud's)."""
    from brokers import free_port
    from conftest import require_mosquitto

    require_mosquitto()
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: docs/mosquitto/make-certs.sh needs it")
    etc = tmp_path / "etc"
    etc.mkdir()
    for args in (["ca"], ["server", "localhost"], ["device", "dev-001"], ["device", "dev-002"], ["cloud"]):
        r = _make_certs(etc, *args)
        assert r.returncode == 0, r.stderr
    broker = MosquittoBroker(tmp_path / "run", users={CLOUD: "cloud-pw"}, acl=_acl_text())
    (etc / "passwd").write_text((broker.dir / "passwd").read_text())
    (etc / "acl").write_text(_acl_text())
    tls_port = free_port()
    conf = (DOCS / "mosquitto.conf").read_text()
    conf = conf.replace("/etc/mosquitto/edgeloop/", f"{etc}/")
    conf = conf.replace("/var/lib/mosquitto/", f"{broker.persist_dir}/")
    conf = conf.replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    conf = conf.replace("listener 1883 127.0.0.1\n", f"listener {broker.port} 127.0.0.1\n")
    assert str(tls_port) in conf and str(broker.port) in conf
    broker.persist_dir.mkdir(exist_ok=True)
    header = ("user root\n" if os.geteuid() == 0 else "") + "log_dest stderr\n"
    broker.conf_path.write_text(header + conf)
    broker.tls_port = tls_port

    class _CA:  # what Collector.connect needs from broker.ca
        cert_path = etc / "device-ca.crt"

    broker.ca = _CA()  # type: ignore[assignment]
    broker.host = "localhost"  # the name in the server certificate (make-certs.sh server)
    broker.start()
    try:
        yield broker, etc
    finally:
        broker.stop()


def test_documented_production_config(prod_broker: tuple[MosquittoBroker, Path]) -> None:
    from brokers import CertPair

    broker, etc = prod_broker
    dev1 = CertPair(etc / "dev-001.crt", etc / "dev-001.key")
    with _observer_pw(broker) as obs, Collector.connect(broker, "dev-001", tls=dev1) as dev:
        ok = dev.publish_many([(_own("dev-001", "up"), b"prod-own")])
        bad = dev.publish_many([(_own("dev-002", "up"), b"prod-foreign")])
        assert not ok[0].is_failure and bad[0].is_failure  # type: ignore[attr-defined]
        assert obs.wait_for(1, 5)
        time.sleep(0.3)
        assert {p for _, p, _, _ in obs.messages} == {b"prod-own"}
    assert _tls_handshake_refused(broker, None), "no client certificate was accepted"
    assert _refused(broker).is_failure  # type: ignore[attr-defined]  # anonymous, plain port
    rc = _refused(broker, username="dev-001", password="x")
    assert rc.is_failure  # type: ignore[attr-defined]


def test_a_certificate_cannot_take_another_devices_client_id(prod_broker: tuple[MosquittoBroker, Path]) -> None:
    """dev-002's certificate connecting with client id "dev-001" used to knock dev-001 off (a
    session takeover); with use_username_as_clientid its client id is its certificate's name."""
    from brokers import CertPair

    broker, etc = prod_broker
    dev1 = CertPair(etc / "dev-001.crt", etc / "dev-001.key")
    dev2 = CertPair(etc / "dev-002.crt", etc / "dev-002.key")
    with Collector.connect(broker, "dev-001", tls=dev1) as victim, _observer_pw(broker) as obs:
        with Collector.connect(broker, "dev-001", tls=dev2) as thief:
            time.sleep(1.0)
            assert not victim.disconnected.is_set(), "the other certificate knocked dev-001 off"
            assert thief.publish_many([(_own("dev-002", "up"), b"thief-own")])[0].is_failure is False  # type: ignore[attr-defined]
            assert thief.publish_many([(_own("dev-001", "up"), b"thief-as-victim")])[0].is_failure  # type: ignore[attr-defined]
        assert not victim.publish_many([(_own("dev-001", "up"), b"victim-still-here")])[0].is_failure  # type: ignore[attr-defined]
        assert obs.wait_for(2, 5)
        time.sleep(0.3)
        assert {p for _, p, _, _ in obs.messages} == {b"thief-own", b"victim-still-here"}


def test_the_cloud_identity_is_issued_apart_and_a_device_cannot_take_it(
    prod_broker: tuple[MosquittoBroker, Path],
) -> None:
    """make-certs.sh refuses a device certificate named like the cloud (or any name the ACL gives
    privileges); `make-certs.sh cloud` issues the cloud's, which reads every uplink."""
    from brokers import CertPair

    broker, etc = prod_broker
    files = sorted(etc.iterdir())
    for name in ("edgeloop-cloud", "EDGELOOP-cloud", "edgeloop-cloud-2"):
        r = _make_certs(etc, "device", name)
        assert r.returncode == 2 and "reserved for the cloud" in r.stderr, (name, r.stderr)
        assert sorted(etc.iterdir()) == files, "nothing issued"
    (etc / "acl").write_text(_acl_text())  # the script reads the ACL next to it, or $EDGELOOP_ACL
    r = subprocess.run(["bash", str(DOCS / "make-certs.sh"), "device", OBSERVER], cwd=etc, capture_output=True,
                       text=True, env={**os.environ, "EDGELOOP_ACL": str(etc / "acl")})
    assert r.returncode == 2 and "reserved" in r.stderr, r.stderr
    assert _make_certs(etc, "cloud", "dev-009").returncode == 2, "the cloud's names are edgeloop-..."
    subject = subprocess.run(["openssl", "x509", "-in", str(etc / "edgeloop-cloud.crt"), "-noout", "-subject"],
                             capture_output=True, text=True, check=True).stdout
    assert "CN = edgeloop-cloud" in subject or "CN=edgeloop-cloud" in subject
    cloud = CertPair(etc / "edgeloop-cloud.crt", etc / "edgeloop-cloud.key")
    dev1 = CertPair(etc / "dev-001.crt", etc / "dev-001.key")
    with Collector.connect(broker, "anything", tls=cloud) as c, Collector.connect(broker, "dev-001", tls=dev1) as dev:
        c.subscribe(f"{ROOT}/dev/+/up")
        assert not dev.publish_many([(_own("dev-001", "up"), b"to-the-cloud")])[0].is_failure  # type: ignore[attr-defined]
        assert c.wait_for(1, 5) and c.messages[0][1] == b"to-the-cloud"
        assert not c.publish_many([(_own("dev-001", "ack"), b"ack")])[0].is_failure  # type: ignore[attr-defined]


def _observer_pw(broker: MosquittoBroker) -> Collector:
    """The cloud user (password, plain private listener) watching device uplinks."""
    c = Collector.connect(broker, "cloud-watch", username=CLOUD, password="cloud-pw")
    assert not c.subscribe(f"{ROOT}/dev/+/up")[0].is_failure  # type: ignore[attr-defined]
    return c


# --------------------------------------------------------------------------- retained uplinks

@pytest.mark.parametrize("shared", [False, True], ids=["plain", "shared"])
def test_a_retained_uplink_is_refused_and_counted(tmp_path: Path, mosquitto: MosquittoBroker, shared: bool) -> None:
    """A retained batch on a device's up topic would be replayed to every new cloud subscriber:
    the cloud refuses it (counted, logged, not stored), live (MQTT 5 retain-as-published) and
    when the broker replays it at subscribe time; a plain batch next to it is stored."""
    import sqlite3
    import threading

    from recs import record_of

    from cloud.config import CloudConfig
    from cloud.run import build
    from shared import schemas, topics
    from shared.mqtt import MqttConfig

    def batch(seq: int) -> bytes:
        rec = record_of(seq, "summary", 1767571200.0 + seq * 86400, "bella", {"day": "2026-01-05"})
        return schemas.encode(schemas.UplinkBatch("dev-r", (rec,), "0123456789abcdef0123456789abcdef"))

    def stored() -> list[int]:
        with sqlite3.connect(tmp_path / "cloud.db") as con:
            return [r[0] for r in con.execute("SELECT seq FROM records ORDER BY seq")]

    with Collector.connect(mosquitto, "dev-r") as dev:
        dev.client.publish(topics.uplink("dev-r"), batch(1), qos=1, retain=True).wait_for_publish(5)
        svc = build(CloudConfig(db=str(tmp_path / "cloud.db"), mqtt=MqttConfig(url=mosquitto.url),
                                shared_subscription=shared), notifiers=[])
        stop = threading.Event()
        svc.start()
        try:
            assert svc.connected.wait(10)
            threading.Thread(target=svc.serve, args=(stop,), daemon=True).start()
            time.sleep(1.0)  # subscribed: a plain subscription gets the retained batch 1 now
            dev.client.publish(topics.uplink("dev-r"), batch(2), qos=1, retain=True).wait_for_publish(5)
            dev.publish_many([(topics.uplink("dev-r"), batch(3))])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and stored() != [3]:
                time.sleep(0.1)
            time.sleep(0.5)
            assert stored() == [3], "only the plain batch is stored"
            # mosquitto 2.0 replays retained messages to a $share subscription too (MQTT 5 says it should not)
            assert svc.retained_refused == 2, svc.retained_refused
        finally:
            stop.set()
            svc.stop()
        dev.client.publish(topics.uplink("dev-r"), b"", qos=1, retain=True).wait_for_publish(5)  # clean up
