"""The fault-injecting proxy: pass, delay, cut, refuse, blackhole, byte counters; and an MQTT
client behind a blackholed link noticing it through its keepalive."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from brokers import Collector, MosquittoBroker
from faultproxy import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def proxy(echo: int) -> Iterator[FaultProxy]:
    with FaultProxy(echo) as p:
        yield p


def _conn(p: FaultProxy) -> socket.socket:
    s = socket.create_connection((p.host, p.port), timeout=2)
    return s


def _roundtrip(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_pass_counts_bytes(proxy: FaultProxy) -> None:
    with _conn(proxy) as s:
        assert _roundtrip(s, b"x" * 10_000) == b"x" * 10_000
    time.sleep(0.1)
    assert proxy.stats.bytes_up == 10_000 and proxy.stats.bytes_down == 10_000
    assert proxy.stats.accepted == 1


def test_delay(proxy: FaultProxy) -> None:
    proxy.delay(0.3)
    with _conn(proxy) as s:
        t0 = time.monotonic()
        assert _roundtrip(s, b"ping") == b"ping"
        assert time.monotonic() - t0 >= 0.55  # delayed on the way up and on the way down


def test_cut_closes_open_connections(proxy: FaultProxy) -> None:
    s1, s2 = _conn(proxy), _conn(proxy)
    assert _roundtrip(s1, b"a") == b"a" and _roundtrip(s2, b"b") == b"b"
    assert proxy.cut() == 2
    for s in (s1, s2):
        _assert_closed(s)
    with _conn(proxy) as s3:  # new connections pass again
        assert _roundtrip(s3, b"c") == b"c"
    assert proxy.stats.cuts == 1


def _assert_closed(s: socket.socket) -> None:
    """The peer closed or reset the connection (EOF or ECONNRESET, no timeout)."""
    try:
        assert s.recv(1) == b""
    except ConnectionResetError:
        pass
    finally:
        s.close()


def test_refuse(proxy: FaultProxy) -> None:
    proxy.refuse()
    _assert_closed(_conn(proxy))
    assert proxy.stats.refused == 1
    proxy.pass_through()
    with _conn(proxy) as s2:
        assert _roundtrip(s2, b"ok") == b"ok"


def test_blackhole_holds_without_closing(proxy: FaultProxy) -> None:
    with _conn(proxy) as s:
        assert _roundtrip(s, b"before") == b"before"
        proxy.blackhole()
        s.sendall(b"lost")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)  # nothing back, and no close either: half-open
        with _conn(proxy) as fresh:  # new connections are accepted and held too
            fresh.settimeout(0.3)
            fresh.sendall(b"x")
            with pytest.raises(TimeoutError):
                fresh.recv(1)
        assert proxy.stats.bytes_up == len(b"before")
        assert proxy.stats.held_chunks >= 1


def test_mqtt_client_notices_blackhole_through_keepalive(mosquitto: MosquittoBroker) -> None:
    """paho (keepalive K) behind a half-open link: measure when it gives up on the link."""
    keepalive = 2
    with FaultProxy(mosquitto.port) as p:
        c = Collector("ka-probe")
        c.client.connect(p.host, p.port, keepalive=keepalive)
        c.client.loop_start()
        try:
            assert c.connected.wait(5)
            time.sleep(0.3)
            p.blackhole()
            t0 = time.monotonic()
            assert c.disconnected.wait(4 * keepalive), "dead link never noticed"
            took = time.monotonic() - t0
        finally:
            c.close()
    print(f"\nblackholed link noticed after {took:.2f}s with keepalive {keepalive}s "
          f"({took / keepalive:.2f}x)")
    # paho 2.2 sends PINGREQ after K of silence and gives up K after that: at most 2K
    assert took <= 2 * keepalive + 1.2  # + paho's 1 s loop tick
