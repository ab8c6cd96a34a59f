"""The write lock every writer of the store takes (either back end)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlite_utils import Database


@contextlib.contextmanager
def write_lock(db: Database) -> Iterator[None]:
    """One transaction that takes SQLite's write lock up front (``BEGIN IMMEDIATE``), so two
    aggregators on one database cannot both act on stale reads; nested use is a savepoint.
    On PostgreSQL (``db`` is the compatibility layer) a transaction of the store's back end."""
    backend = getattr(db, "backend", None)
    if backend is not None:
        with backend.transaction():
            yield
        return
    if db.conn.in_transaction:
        with db.atomic():
            yield
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    else:
        db.conn.execute("COMMIT")
