"""Transitional: the notification tables' ``Migrations`` set moved to ``cloud.store.alerts``.

Only ``cloud.feedback``, ``cloud.quality`` and ``cloud.regression`` (being moved to repositories by
other branches) still import ``ensure_schema`` and ``write_lock`` from here; delete this module once
they no longer do. The rules themselves import nothing from it.
"""

from __future__ import annotations

from typing import Any

from cloud.store.alerts import migrations
from cloud.store.db import write_lock
from cloud.store.schema import ensure_set

__all__ = ["ensure_schema", "write_lock"]


def ensure_schema(db: Any) -> None:
    """Apply the set to a bare SQLite ``Database`` (a store creates every table when it opens)."""
    ensure_set(db, migrations)
