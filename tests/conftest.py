"""Shared fixtures: private Mosquitto brokers (tests/brokers.py).

Without the ``mosquitto`` binary the broker tests skip with a reason; with
``EDGELOOP_REQUIRE_MOSQUITTO=1`` (set by CI) a missing binary fails them instead, naming the
Debian package to install. Tests that use a broker fixture are marked ``mosquitto``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import MOSQUITTO_PACKAGE, MosquittoBroker, mosquitto_binary

BROKER_FIXTURES = frozenset({"mosquitto", "mosquitto_module", "mosquitto_factory"})


def require_mosquitto() -> None:
    """Skip (or, when EDGELOOP_REQUIRE_MOSQUITTO=1, fail) if the mosquitto binary is missing."""
    if mosquitto_binary() is not None:
        return
    msg = (f"mosquitto binary not found on PATH or in /usr/sbin: install the Debian package "
           f"'{MOSQUITTO_PACKAGE}' (apt-get install {MOSQUITTO_PACKAGE})")
    if os.environ.get("EDGELOOP_REQUIRE_MOSQUITTO") == "1":
        pytest.fail(msg + " [EDGELOOP_REQUIRE_MOSQUITTO=1: a skip is not allowed here]",
                    pytrace=False)
    pytest.skip(msg)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mosquitto)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh anonymous broker with persistence, on a free port, for one test."""
    require_mosquitto()
    broker = MosquittoBroker(tmp_path / "mosquitto", persistence=True).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def mosquitto_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One anonymous broker with persistence shared by a test module."""
    require_mosquitto()
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), persistence=True).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """``make(**MosquittoBroker options)`` -> a started broker; all are stopped after the test."""
    require_mosquitto()
    made: list[MosquittoBroker] = []

    def make(**kwargs: Any) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{len(made)}", **kwargs)
        made.append(broker)
        return broker.start()

    try:
        yield make
    finally:
        for broker in made:
            broker.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A cloud store URL on each back end: a SQLite file, and a PostgreSQL database created on
    the local server and dropped after the test (tests/pgdb.py: skipped without a server unless
    EDGELOOP_REQUIRE_POSTGRES=1)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        from pgdb import scratch_database

        with scratch_database() as url:
            yield url


@pytest.fixture
def any_store(store_url: str) -> Iterator[Any]:
    """An open cloud store on each back end (``store_url``), closed after the test."""
    from cloud.store.db import open_store

    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()
