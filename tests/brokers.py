"""A real Mosquitto broker for tests: own config, own free port, own persistence dir, own certs.

Usage::

    broker = MosquittoBroker(tmp_path, persistence=True)
    broker.start()          # waits until the port accepts connections
    broker.url              # "mqtt://127.0.0.1:PORT"
    broker.kill()           # SIGKILL (power cut); broker.restart() keeps port and persistence dir
    broker.stop()           # SIGTERM, saves the persistence db

Security options: ``users={"dev-1": "pw"}`` writes a password file (hashed with
``mosquitto_passwd -U``); ``acl="..."`` writes an ACL file (``pattern`` lines may use %u / %c);
``tls=True`` adds a second listener on ``tls_port`` with a CA, a server certificate for
127.0.0.1/localhost and client certificates made here with ``cryptography``
(``client_cert(cn)``; ``foreign_client_cert(cn)`` is signed by a CA the broker does not trust).

The broker's log goes to ``log_path``; ``log_tail()`` returns its end for failure messages.
Never touches the system broker on 1883: every instance binds a fresh free port on 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO_PACKAGE = "mosquitto"  # the Debian/Ubuntu package that ships /usr/sbin/mosquitto

_LIVE: weakref.WeakSet[MosquittoBroker] = weakref.WeakSet()


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary (PATH, then /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """True once host:port accepts a TCP connection, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its private key on disk."""

    cert: Path
    key: Path


class CertAuthority:
    """A throw-away CA (EC P-256) that issues server and client certificates into `directory`."""

    def __init__(self, directory: Path, name: str = "edgeloop-test-ca") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = self.dir / f"{name}.crt"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool = False) -> CertPair:
        """Issue a certificate with common name `cn` (a server cert gets SANs 127.0.0.1, localhost)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                       else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cn)
        pair = CertPair(self.dir / f"{safe}.crt", self.dir / f"{safe}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        pair.key.chmod(0o600)
        return pair


# --------------------------------------------------------------------------- broker


class MosquittoError(RuntimeError):
    """The broker could not be started (the message carries the end of its log)."""


class MosquittoBroker:
    """One private mosquitto process; see the module docstring."""

    def __init__(
        self,
        directory: str | Path,
        *,
        persistence: bool = False,
        autosave_interval: int = 1,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        allow_anonymous: bool | None = None,
        tls: bool = False,
        require_certificate: bool = True,
        use_identity_as_username: bool = False,
        extra_conf: str = "",
        verbose: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise MosquittoError(f"mosquitto not found: install the Debian package "
                                 f"'{MOSQUITTO_PACKAGE}' (apt-get install {MOSQUITTO_PACKAGE})")
        self.binary = binary
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_port(host)
        self.tls_port: int | None = free_port(host) if tls else None
        self.persistence = persistence
        self.users = dict(users or {})
        self.acl = acl
        self.allow_anonymous = (not self.users and not tls) if allow_anonymous is None \
            else allow_anonymous
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path = self.dir / "mosquitto.conf"
        self.persist_dir = self.dir / "persist"
        self.ca: CertAuthority | None = None
        self.server_cert: CertPair | None = None
        self._foreign_ca: CertAuthority | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        lines = [
            "# written by tests/brokers.py",
            "user root" if os.geteuid() == 0 else "",
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "log_type debug" if verbose else "",
            "log_timestamp_format %H:%M:%S",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            f"listener {self.port} {host}",
        ]
        if persistence:
            self.persist_dir.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.persist_dir}/",
                      f"autosave_interval {autosave_interval}"]
        if self.users:
            pw = self.dir / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            pw.chmod(0o600)
            passwd = shutil.which("mosquitto_passwd")
            if passwd is None:
                raise MosquittoError("mosquitto_passwd not found (it ships in the Debian package "
                                     f"'{MOSQUITTO_PACKAGE}'); it hashes the password file")
            subprocess.run([passwd, "-U", str(pw)], check=True, capture_output=True, timeout=30)
            lines.append(f"password_file {pw}")
        if acl is not None:
            acl_path = self.dir / "acl"
            acl_path.write_text(acl)
            lines.append(f"acl_file {acl_path}")
        if tls:
            self.ca = CertAuthority(self.dir / "pki")
            self.server_cert = self.ca.issue("localhost", server=True)
            lines += [
                f"listener {self.tls_port} {host}",
                f"cafile {self.ca.cert_path}",
                f"certfile {self.server_cert.cert}",
                f"keyfile {self.server_cert.key}",
                "tls_version tlsv1.2",
                f"require_certificate {'true' if require_certificate else 'false'}",
                f"use_identity_as_username {'true' if use_identity_as_username else 'false'}",
            ]
        if extra_conf:
            lines.append(extra_conf)
        self.conf_path.write_text("\n".join(x for x in lines if x) + "\n")

    # -- certificates
    def client_cert(self, cn: str) -> CertPair:
        """A client certificate with CN `cn`, signed by the broker's CA."""
        if self.ca is None:
            raise MosquittoError("client_cert() needs MosquittoBroker(tls=True)")
        return self.ca.issue(cn)

    def foreign_client_cert(self, cn: str) -> CertPair:
        """A client certificate with CN `cn` from a CA that the broker does not trust."""
        if self._foreign_ca is None:
            self._foreign_ca = CertAuthority(self.dir / "foreign-pki", "foreign-ca")
        return self._foreign_ca.issue(cn)

    # -- lifecycle
    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://{self.host}:{self.tls_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start the broker and wait until its listener(s) accept connections."""
        if self.running():
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            log.write(f"--- start #{self.starts + 1}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1
        _LIVE.add(self)
        for port in (self.port, self.tls_port):
            if port is None:
                continue
            if not self._wait(port, timeout):
                rc = self._proc.poll()
                self.kill()
                raise MosquittoError(f"mosquitto did not listen on {self.host}:{port} within "
                                     f"{timeout}s (exit code {rc}); log:\n{self.log_tail()}")
        return self

    def _wait(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            if wait_port(self.host, port, timeout=0.2):
                return True
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence db), SIGKILL if it does not exit in time."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a power cut; whatever was not autosaved is lost."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self._proc = None

    def restart(self, *, hard: bool = False, down_for: float = 0.0) -> None:
        """Stop (SIGKILL if `hard`) and start again on the same port and persistence dir."""
        if hard:
            self.kill()
        else:
            self.stop()
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.url}, pid={self.pid}, dir={self.dir})"


@atexit.register
def _stop_all() -> None:  # pragma: no cover - safety net for interrupted runs
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.kill()


# --------------------------------------------------------------------------- paho helpers


class Collector:
    """A paho 2.x (CallbackAPIVersion.VERSION2) client that records what it receives.

    ``Collector.connect(broker, "id")`` connects (MQTT v5 by default), starts the network loop
    and waits for the CONNACK; ``connack`` holds its reason code. ``messages`` is a list of
    (topic, payload, qos, retain). Always ``close()`` it (or use ``with``).
    """

    def __init__(self, client_id: str, *, protocol: str = "v5", clean_start: bool = True,
                 session_expiry: int = 0) -> None:
        self._mqtt = mqtt
        self.protocol = mqtt.MQTTv5 if protocol == "v5" else mqtt.MQTTv311
        v3_clean = None if self.protocol == mqtt.MQTTv5 else clean_start
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=self.protocol, clean_session=v3_clean)
        self.clean_start = clean_start
        self.props: Properties | None = None
        if self.protocol == mqtt.MQTTv5 and session_expiry:
            self.props = Properties(PacketTypes.CONNECT)
            self.props.SessionExpiryInterval = session_expiry
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.connack: object | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.suback: dict[int, list[object]] = {}
        self.puback: dict[int, object] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish

    # callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.connack = reason_code
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if self.connack is None:
            self.connack = reason_code
        self.disconnected.set()

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self.suback[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self.puback[mid] = reason_code
            self._cond.notify_all()

    # actions
    @classmethod
    def connect(cls, broker: MosquittoBroker, client_id: str, *, username: str | None = None,
                password: str | None = None, tls: CertPair | None = None, use_tls: bool = False,
                timeout: float = 10.0, expect_ok: bool = True, **kw: object) -> Collector:
        """Connect to `broker` (its TLS listener when `tls`/`use_tls`); waits for the CONNACK."""
        self = cls(client_id, **kw)  # type: ignore[arg-type]
        c = self.client
        if username is not None:
            c.username_pw_set(username, password)
        port = broker.port
        if tls is not None or use_tls:
            assert broker.ca is not None and broker.tls_port is not None
            c.tls_set(ca_certs=str(broker.ca.cert_path),
                      certfile=str(tls.cert) if tls else None,
                      keyfile=str(tls.key) if tls else None)
            port = broker.tls_port
        if self.protocol == mqtt.MQTTv5:
            c.connect(broker.host, port, keepalive=30, clean_start=self.clean_start,
                      properties=self.props)
        else:
            c.connect(broker.host, port, keepalive=30)
        c.loop_start()
        if not self.connected.wait(timeout) and expect_ok:
            self.close()
            raise AssertionError(f"no CONNACK from {broker} within {timeout}s:\n{broker.log_tail()}")
        if expect_ok and getattr(self.connack, "is_failure", True):
            self.close()
            raise AssertionError(f"connect refused: {self.connack}")
        return self

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> list[object]:
        """Subscribe and return the SUBACK reason codes."""
        rc, mid = self.client.subscribe(topic, qos)
        if rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"subscribe({topic!r}) failed locally: rc={rc}")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self.suback, timeout):
                raise AssertionError(f"no SUBACK for {topic!r}")
            return self.suback[mid]

    def publish_many(self, items: list[tuple[str, bytes]], qos: int = 1,
                     timeout: float = 20.0) -> list[object]:
        """Publish (topic, payload) pairs at QoS >= 1; return each PUBACK reason code in order
        (MQTT v5 carries 'Not authorized' there when the broker's ACL refuses the publish)."""
        mids = []
        for topic, payload in items:
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise AssertionError(f"publish({topic!r}) failed locally: rc={info.rc}")
            mids.append(info.mid)
        with self._cond:
            if not self._cond.wait_for(lambda: all(m in self.puback for m in mids), timeout):
                missing = sum(m not in self.puback for m in mids)
                raise AssertionError(f"{missing} of {len(mids)} PUBACKs missing after {timeout}s")
            return [self.puback[m] for m in mids]

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least `n` messages arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.messages) >= n, timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        with contextlib.suppress(Exception):
            self.client.loop_stop()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
