"""A private PostgreSQL database per test: created on the local server, dropped afterwards.

The server is the machine's PostgreSQL at 127.0.0.1:5432 (trust auth; user ``postgres``, else the
login user; an existing database ``test`` to connect to for CREATE/DROP DATABASE). Override with
``EDGELOOP_PG_ADMIN_URL``. Without a server the PostgreSQL tests skip with the reason; with
``EDGELOOP_REQUIRE_POSTGRES=1`` (set by CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from functools import cache

import pytest

ADMIN_URLS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test",
              f"postgresql://{os.environ.get('USER', 'root')}@127.0.0.1:5432/test")


@cache
def admin_url() -> str | None:
    """A URL of the server that may create databases, or None (the reason is in ``_why``)."""
    import psycopg

    urls = [os.environ["EDGELOOP_PG_ADMIN_URL"]] if os.environ.get("EDGELOOP_PG_ADMIN_URL") else ADMIN_URLS
    for url in urls:
        try:
            with psycopg.connect(url, connect_timeout=3, autocommit=True):
                return url
        except psycopg.Error as exc:
            _why.append(f"{url}: {str(exc).strip().splitlines()[0]}")
    return None


_why: list[str] = []


def require_postgres() -> str:
    url = admin_url()
    if url is not None:
        return url
    msg = ("no PostgreSQL server to test against (" + "; ".join(_why) + "): install and start "
           "postgresql (apt-get install postgresql) or set EDGELOOP_PG_ADMIN_URL")
    if os.environ.get("EDGELOOP_REQUIRE_POSTGRES") == "1":
        pytest.fail(msg + " [EDGELOOP_REQUIRE_POSTGRES=1: a skip is not allowed here]", pytrace=False)
    pytest.skip(msg)


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A new empty database; yields its URL and drops it (with its connections) afterwards."""
    import psycopg

    admin = require_postgres()
    name = f"edgeloop_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
