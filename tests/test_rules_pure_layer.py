"""``cloud/rules/`` decides without a database: it imports nothing from sqlite_utils, sqlite3,
psycopg or ``cloud.store`` (what it reads and writes goes through ``cloud.rules.history``'s
protocols, which the store's repositories implement). Read from the source with ``ast``, lazy
imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "cloud" / "rules"
FORBIDDEN = ("sqlite_utils", "sqlite3", "psycopg", "psycopg_pool", "cloud.store")


def forbidden_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return sorted({n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)})


@pytest.mark.parametrize("path", sorted(RULES.glob("*.py")), ids=lambda p: p.name)
def test_the_rules_import_no_database(path: Path) -> None:
    bad = forbidden_imports(path)
    assert bad == [], f"cloud/rules/{path.name} imports {bad}: put the SQL in a cloud/store repository"


def test_the_scan_finds_lazy_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import json\n\ndef f():\n    from cloud.store.db import CloudStore\n    import sqlite3\n")
    assert forbidden_imports(f) == ["cloud.store.db", "sqlite3"]
