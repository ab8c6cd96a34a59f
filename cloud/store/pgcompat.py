"""The part of sqlite-utils' ``Database`` that the cloud modules not yet on repositories use,
over the PostgreSQL back end.

A transition layer, not a second ORM: the hot path (records, decisions, incidents) is written
against :class:`cloud.store.backend.Backend` in repositories; modules still reading
``store.db`` (feedback, rollouts, commands, deliveries, retraining, regression, the dashboard)
run on PostgreSQL through this until each is moved. It rewrites the few SQLite idioms they use
(``INSERT OR IGNORE``/``OR REPLACE``, ``GROUP_CONCAT``, ``lastrowid``); migrations are not run
here (the schema registry, :mod:`cloud.store.schema`, creates every table when the store opens).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from cloud.store.backend import PostgresBackend
from cloud.store.schema import postgres_columns

_INSERT_OR = re.compile(r"^\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)\s*(\(([^)]*)\))?", re.I | re.S)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.I)
_GROUP_CONCAT = re.compile(r"GROUP_CONCAT\(\s*(DISTINCT\s+)?([\w.]+)\s*\)", re.I)


def _param(v: Any) -> Any:
    return int(v) if isinstance(v, bool) else v


@lru_cache(maxsize=2048)  # per statement text: the same few hundred statements run again and again
def translate(sql: str) -> tuple[str, str | None]:
    """A SQLite-idiom statement in PostgreSQL, and the id column to return for ``lastrowid``."""
    sql = _GROUP_CONCAT.sub(lambda m: f"string_agg({m.group(1) or ''}CAST({m.group(2)} AS TEXT), ',')", sql)
    m = _INSERT_OR.match(sql)
    table = None
    if m:
        table = m.group(2)
        cols_given = [c.strip() for c in m.group(4).split(",")] if m.group(4) else None
        cols, pk = postgres_columns().get(table, ((), ()))
        head = f"INSERT INTO {table}" + (f" ({m.group(4)})" if m.group(4) else "")
        sql = head + sql[m.end():]
        if m.group(1).upper() == "IGNORE" or not pk:
            sql += " ON CONFLICT DO NOTHING"
        else:
            upd = [c for c in (cols_given or list(cols)) if c not in pk]
            sql += (f" ON CONFLICT ({', '.join(pk)}) DO "
                    + (f"UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in upd)}" if upd else "NOTHING"))
    elif (m2 := _INSERT.match(sql)) is not None:
        table = m2.group(1)
    if table is not None and "RETURNING" not in sql.upper():
        pk = postgres_columns().get(table, ((), ()))[1]
        if pk == ("id",):
            return sql + " RETURNING id", "id"
    return sql, None


class CompatCursor:
    """A finished statement: rows fetched, ``rowcount`` and ``lastrowid`` like sqlite3's."""

    def __init__(self, rows: list[tuple[Any, ...]], description: Any, rowcount: int,
                 lastrowid: int | None) -> None:
        self._rows = rows
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Conn:
    """``db.conn`` as far as the modules look at it."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend

    @property
    def in_transaction(self) -> bool:
        return self._backend.in_transaction()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> CompatCursor:
        if sql.strip().upper() in ("BEGIN IMMEDIATE", "COMMIT"):
            raise RuntimeError("use store.backend.transaction() on PostgreSQL")
        return PgDatabase(self._backend).execute(sql, params)


class PgDatabase:
    """``Database``-shaped access to a PostgreSQL store (see the module docstring)."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.conn = _Conn(backend)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> CompatCursor:
        if isinstance(params, dict):
            raise TypeError("named parameters are not supported on PostgreSQL: pass a list")
        pg, id_col = translate(sql)
        cur = self.backend.execute(pg, [_param(p) for p in params])
        rows: list[tuple[Any, ...]] = []
        desc = getattr(cur, "description", None)
        if desc is not None:
            rows = list(cur.fetchall())
        last = None
        if id_col is not None and rows:
            last = int(rows[0][0])
            rows = []
        return CompatCursor(rows, desc, cur.rowcount, last)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        yield from self.backend.query(translate(sql)[0], [_param(p) for p in params])

    def table(self, name: str) -> PgTable:
        return PgTable(self, name)

    def __getitem__(self, name: str) -> PgTable:
        return PgTable(self, name)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction; nested in one, it joins it (no savepoint: a round trip saved per
        statement; the modules here let an inner failure end the outer block too)."""
        if self.backend.in_transaction():
            yield
            return
        with self.backend.transaction():
            yield

    def rollback(self) -> None:
        raise RuntimeError("PostgreSQL transactions roll back when their block raises")

    def close(self) -> None:
        self.backend.close()


class _Column:
    def __init__(self, name: str) -> None:
        self.name = name


class PgTable:
    """A table, with the sqlite-utils methods the modules call."""

    def __init__(self, db: PgDatabase, name: str) -> None:
        self.db, self.name = db, name
        self.last_pk: Any = None

    def _meta(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return postgres_columns().get(self.name, ((), ()))

    @property
    def columns(self) -> list[_Column]:
        return [_Column(c) for c in self._meta()[0]]

    def exists(self) -> bool:
        return self.db.backend.execute("SELECT to_regclass(?) IS NOT NULL", [self.name]).fetchone()[0]

    @property
    def count(self) -> int:
        return int(self.db.backend.execute(f'SELECT COUNT(*) FROM "{self.name}"').fetchone()[0])

    @property
    def rows(self) -> Iterator[dict[str, Any]]:
        return self.rows_where()

    def rows_where(self, where: str | None = None, where_args: Sequence[Any] = (), order_by: str | None = None,
                   select: str = "*", limit: int | None = None) -> Iterator[dict[str, Any]]:
        sql = f'SELECT {select} FROM "{self.name}"'
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.db.query(sql, where_args)

    def get(self, pk_value: Any) -> dict[str, Any]:
        pk = self._meta()[1]
        vals = pk_value if isinstance(pk_value, (list, tuple)) else [pk_value]
        rows = list(self.rows_where(" AND ".join(f"{c} = ?" for c in pk), vals))
        if not rows:
            from sqlite_utils.db import NotFoundError

            raise NotFoundError(f"{self.name}: no row {pk_value!r}")
        return rows[0]

    def insert(self, row: dict[str, Any], pk: Any = None, replace: bool = False, ignore: bool = False,
               **_: Any) -> PgTable:
        cols = list(row)
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE" if ignore else "INSERT"
        cur = self.db.execute(f'{verb} INTO {self.name} ({", ".join(cols)}) VALUES '
                              f'({", ".join("?" for _ in cols)})', list(row.values()))
        key = self._meta()[1]
        self.last_pk = cur.lastrowid if key == ("id",) and "id" not in row else (
            row.get(key[0]) if len(key) == 1 else tuple(row.get(k) for k in key))
        return self

    def insert_all(self, rows: Iterable[dict[str, Any]], **kw: Any) -> PgTable:
        for r in rows:
            self.insert(r, **kw)
        return self

    def upsert(self, row: dict[str, Any], pk: Any = None, **_: Any) -> PgTable:
        key = tuple(pk) if isinstance(pk, (list, tuple)) else (pk,) if pk else self._meta()[1]
        cols = list(row)
        upd = [c for c in cols if c not in key]
        sql = (f'INSERT INTO {self.name} ({", ".join(cols)}) VALUES ({", ".join("?" for _ in cols)}) '
               f'ON CONFLICT ({", ".join(key)}) DO '
               + (f"UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in upd)}" if upd else "NOTHING"))
        self.db.backend.execute(sql, [_param(v) for v in row.values()])
        self.last_pk = row.get(key[0]) if len(key) == 1 else tuple(row.get(k) for k in key)
        return self

    def update(self, pk_value: Any, updates: dict[str, Any] | None = None, **_: Any) -> PgTable:
        if not updates:
            return self
        key = self._meta()[1]
        vals = list(pk_value) if isinstance(pk_value, (list, tuple)) else [pk_value]
        sql = (f'UPDATE {self.name} SET {", ".join(f"{c} = ?" for c in updates)} WHERE '
               + " AND ".join(f"{c} = ?" for c in key))
        self.db.backend.execute(sql, [_param(v) for v in [*updates.values(), *vals]])
        self.last_pk = pk_value
        return self
