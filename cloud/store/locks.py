"""SQLite's write lock, taken up front: the migrations of processes opening one fresh file at once
queue on it (the repositories' writers use ``Backend.transaction``, the same lock)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlite_utils import Database


@contextlib.contextmanager
def write_lock(db: Database) -> Iterator[None]:
    """One transaction that takes SQLite's write lock up front (``BEGIN IMMEDIATE``), so two
    aggregators on one database cannot both act on stale reads; nested use is a savepoint."""
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
