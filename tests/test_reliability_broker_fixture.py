"""The broker fixture itself: round trip, restart keeps a persisted QoS 1 message, kill/restart."""

from __future__ import annotations

import socket

from brokers import Collector, MosquittoBroker, wait_port


def test_pubsub_roundtrip(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.port != 1883
    with Collector.connect(mosquitto, "sub") as sub, Collector.connect(mosquitto, "pub") as pub:
        assert [int(rc.value) for rc in sub.subscribe("edgeloop/v1/dev/+/up", 1)] == [1]
        for i in range(20):
            pub.client.publish("edgeloop/v1/dev/d1/up", f"m{i}".encode(), qos=1).wait_for_publish(5)
        assert sub.wait_for(20), sub.messages
        assert [p for _, p, _, _ in sub.messages] == [f"m{i}".encode() for i in range(20)]


def test_restart_keeps_queued_qos1_for_persistent_session(mosquitto: MosquittoBroker) -> None:
    sub = Collector.connect(mosquitto, "cloud-1", clean_start=False, session_expiry=3600)
    assert [int(rc.value) for rc in sub.subscribe("edgeloop/v1/dev/+/up", 1)] == [1]
    sub.close()
    with Collector.connect(mosquitto, "dev-1") as pub:
        pub.client.publish("edgeloop/v1/dev/dev-1/up", b"queued", qos=1).wait_for_publish(5)
    mosquitto.restart()  # SIGTERM: mosquitto writes its persistence db
    assert mosquitto.starts == 2
    with Collector.connect(mosquitto, "cloud-1", clean_start=False, session_expiry=3600) as again:
        assert again.connack is not None and not again.connack.is_failure
        assert again.wait_for(1, timeout=10), f"queued message lost:\n{mosquitto.log_tail()}"
        assert again.messages[0][:3] == ("edgeloop/v1/dev/dev-1/up", b"queued", 1)


def test_kill_and_restart_same_port(mosquitto: MosquittoBroker) -> None:
    port, pid = mosquitto.port, mosquitto.pid
    mosquitto.kill()
    assert not mosquitto.running()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    mosquitto.start()
    assert mosquitto.port == port and mosquitto.pid != pid
    assert wait_port("127.0.0.1", port, 5)
    assert "running" in mosquitto.log_path.read_text()


def test_missing_mosquitto_skips_or_fails_in_ci(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import conftest
    import pytest

    monkeypatch.setattr(conftest, "mosquitto_binary", lambda: None)
    monkeypatch.delenv("EDGELOOP_REQUIRE_MOSQUITTO", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package 'mosquitto'"):
        conftest.require_mosquitto()
    monkeypatch.setenv("EDGELOOP_REQUIRE_MOSQUITTO", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install mosquitto"):
        conftest.require_mosquitto()


def test_broker_tests_are_marked(request, mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    """pytest_collection_modifyitems marks every test that uses a broker fixture (this one too:
    it asks for mosquitto_factory and starts nothing)."""
    assert request.node.get_closest_marker("mosquitto") is not None
    from conftest import BROKER_FIXTURES

    items = [i for i in request.session.items
             if BROKER_FIXTURES & set(getattr(i, "fixturenames", ()))]
    assert request.node in items
    assert all(i.get_closest_marker("mosquitto") for i in items)
