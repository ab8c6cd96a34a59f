"""The store's two back ends behind one small protocol, chosen by URL.

- a plain path, ``sqlite:///path`` (``sqlite://`` alone: in memory): SQLite, the embedded default;
- ``postgresql://user@host:port/dbname``: PostgreSQL through psycopg 3 (a connection pool, one
  connection per thread, prepared statements, autocommit outside :meth:`Backend.transaction`).

Repositories write their SQL once with ``?`` placeholders and the common dialect both engines
speak (``INSERT ... ON CONFLICT DO NOTHING``, ``RETURNING``); the PostgreSQL back end rewrites the
placeholders. What differs (the write lock, locking an individual's rows) is a method here.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]


class StoreUrlError(ValueError):
    """A ``--db`` value that names no store this build can open."""


@dataclass(frozen=True)
class StoreUrl:
    dialect: Dialect
    target: str  # the SQLite path ("" = in memory) or the PostgreSQL conninfo URL

    @property
    def path(self) -> str | None:
        """The SQLite file (None for PostgreSQL or an in-memory store)."""
        return self.target or None if self.dialect == "sqlite" else None


def parse_store_url(url: str | None) -> StoreUrl:
    """``None``/""/``sqlite://``: in-memory SQLite; a path or ``sqlite:///path``: that file
    (SQLAlchemy's convention: ``sqlite:///rel.db`` relative, ``sqlite:////abs/path.db`` absolute);
    ``postgresql://...`` (or ``postgres://``): that database."""
    if not url:
        return StoreUrl("sqlite", "")
    if url.startswith(("postgresql://", "postgres://")):
        return StoreUrl("postgresql", url)
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        return StoreUrl("sqlite", rest[1:] if rest.startswith("/") else rest)  # sqlite:////abs, sqlite:///rel
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        raise StoreUrlError(f"--db {url!r}: unknown store URL scheme; use a file path, "
                            "sqlite:///path or postgresql://user@host:port/dbname")
    return StoreUrl("sqlite", url)


class Cursor(Protocol):
    """What repositories read back from :meth:`Backend.execute`."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Backend(Protocol):
    """One database the repositories talk to (SQLite or PostgreSQL)."""

    dialect: Dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def insert_many(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]],
                    returning: str | None = None) -> list[tuple[Any, ...]]:
        """``INSERT ... ON CONFLICT DO NOTHING`` of many rows in as few statements as the engine
        allows (``types``: each column's PostgreSQL type); returns the ``returning`` columns of
        the rows inserted."""
        ...

    def in_transaction(self) -> bool: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``, the database's write lock);
        nested use is a savepoint."""
        ...

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Inside a transaction: serialise writers of these keys (an individual's incidents and
        cooldowns) until it ends. SQLite's write lock already does."""
        ...

    def close(self) -> None: ...


class Rows:
    """A finished statement's rows (what an autocommitted SQLite statement returns)."""

    def __init__(self, rows: list[Any], rowcount: int, description: Any) -> None:
        self._rows, self.rowcount, self.description = rows, rowcount, description

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows


class SqliteBackend:
    """SQLite over one ``sqlite3`` connection (shared with the sqlite-utils ``Database`` the
    migrations run on)."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.conn.in_transaction:
            return self.conn.execute(sql, params)
        with self.conn:  # outside a transaction a statement commits on its own (autocommit)
            cur = self.conn.execute(sql, params)
            return Rows(cur.fetchall(), cur.rowcount, cur.description)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.conn.in_transaction:
            self.conn.executemany(sql, rows)
            return
        with self.conn:
            self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def insert_many(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]],
                    returning: str | None = None) -> list[tuple[Any, ...]]:
        """Multi-row ``VALUES`` (chunks within SQLite's parameter limit)."""
        out: list[tuple[Any, ...]] = []
        per = max(1, 30000 // max(1, len(columns)))
        row_marks = "(" + ", ".join("?" * len(columns)) + ")"
        for i in range(0, len(rows), per):
            part = rows[i:i + per]
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row_marks] * len(part))} "
                   "ON CONFLICT DO NOTHING" + (f" RETURNING {returning}" if returning else ""))
            cur = self.execute(sql, [v for r in part for v in r])
            if returning:
                out += [tuple(r) for r in cur.fetchall()]
        return out

    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.conn.in_transaction:
            name = f"s{threading.get_ident()}_{id(object())}"
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
                raise
            self.conn.execute(f"RELEASE {name}")
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.execute("COMMIT")

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` holds the whole database."""

    def close(self) -> None:
        self.conn.close()


def where_equal(**columns: Any) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b = ?`` for the columns given a value (None or "" leaves one out), and
    its parameters; ("", []) when none is given."""
    given = {c: v for c, v in columns.items() if v is not None and v != ""}
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{c} = ?" for c in given), list(given.values())


_QMARK = re.compile(r"\?")


def pg_sql(sql: str) -> str:
    """A ``?``-placeholder statement in psycopg's ``%s`` style (a literal ``%`` doubled)."""
    return _QMARK.sub("%s", sql.replace("%", "%%"))


class PostgresBackend:
    """PostgreSQL through a psycopg pool: each thread holds its own connection (autocommit;
    :meth:`transaction` opens a real one), statements are prepared by psycopg after first use."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, max_size: int = 4) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        self._psycopg = psycopg
        try:
            psycopg.connect(url, connect_timeout=5).close()  # fail fast, with the server's reason
            self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=True, timeout=10.0,
                                       kwargs={"autocommit": True, "prepare_threshold": 1})
            self.pool.wait(timeout=10.0)
        except Exception as exc:  # PoolTimeout, OperationalError: name the URL and the fix
            raise StoreUrlError(f"cannot open PostgreSQL store {redact(url)}: {exc}; check the server "
                                "runs and the URL's user, host, port and database") from None
        self._local = threading.local()
        self._sql: dict[str, str] = {}

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self.pool.getconn()
            self._local.conn = conn
        return conn

    def _q(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = pg_sql(sql)
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cur: Cursor = self._conn().execute(self._q(sql), params)
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn().cursor() as cur:
            cur.executemany(self._q(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._conn().cursor(row_factory=dict_row) as cur:
            cur.execute(self._q(sql), params)
            return list(cur.fetchall())

    def insert_many(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]],
                    returning: str | None = None) -> list[tuple[Any, ...]]:
        """One statement whatever the row count: ``INSERT ... SELECT * FROM unnest(arrays)``
        (a fixed text, so psycopg prepares it once)."""
        if not rows:
            return []
        arrays = [list(col) for col in zip(*rows, strict=True)]
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest("
               + ", ".join(f"%b::{t}[]" for t in types) + ") ON CONFLICT DO NOTHING"
               + (f" RETURNING {returning}" if returning else ""))
        cur = self._conn().execute(sql, arrays, binary=True)  # binary arrays: no text escaping
        return [tuple(r) for r in cur.fetchall()] if returning else []

    def in_transaction(self) -> bool:
        conn = getattr(self._local, "conn", None)
        return conn is not None and conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._conn().transaction():
            yield

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Transaction-scoped advisory locks, taken in a fixed order (no deadlock between two
        aggregators locking overlapping sets)."""
        ids = sorted({zlib.crc32(k.encode()) - 2**31 for k in keys})
        if ids:
            self._conn().execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", [ids])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self.pool.putconn(conn)
            self._local.conn = None
        self.pool.close()


def redact(url: str) -> str:
    """The URL without its password (for logs and errors)."""
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


def open_backend(url: str | None) -> Backend:
    """The back end a ``--db`` value names (see :func:`parse_store_url`)."""
    u = parse_store_url(url)
    if u.dialect == "postgresql":
        return PostgresBackend(u.target)
    # the busy timeout from the first statement on: processes opening a fresh file at once queue
    # on its lock (``PRAGMA journal_mode=WAL`` included) instead of failing with "database is locked"
    return SqliteBackend(sqlite3.connect(u.target or ":memory:", timeout=5.0, check_same_thread=False))
