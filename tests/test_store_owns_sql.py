"""Every statement of the cloud lives in a repository of ``cloud/store/``: no other cloud or
application module holds SQL text, opens a database driver, or reaches for a store's sqlite-utils
``db`` (which exists on SQLite only). Read from the source with ``ast``: string constants and
attribute accesses, lazy imports included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "cloud" / "store"
SCANNED = sorted(p for d in ("cloud", "edgeloop") for p in (ROOT / d).rglob("*.py") if STORE not in p.parents)
SQL = re.compile(r"^\s*(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(TABLE|INDEX)|PRAGMA\s)", re.I | re.S)
DRIVERS = ("sqlite3", "sqlite_utils", "psycopg", "psycopg_pool")


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
            out.append(f"line {node.lineno}: SQL {node.value[:50]!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "db" and isinstance(node.value, ast.Name | ast.Attribute) \
                and (getattr(node.value, "id", None) or getattr(node.value, "attr", None)) == "store":
            out.append(f"line {node.lineno}: store.db")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"line {node.lineno}: imports {m}" for m in mods
                    if any(m == d or m.startswith(d + ".") for d in DRIVERS)]
    return out


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sql_outside_the_store(path: Path) -> None:
    bad = offences(path)
    assert bad == [], f"{path.relative_to(ROOT)}: {bad}: move it into a repository of cloud/store/"


def test_the_scan_sees_sql_drivers_and_store_db(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text('import json\n\ndef f(store):\n    import sqlite3\n    store.db.execute("SELECT x FROM t")\n'
                 '    return "Select the best"\n')
    got = offences(f)
    assert len(got) == 3 and any("sqlite3" in g for g in got) and any("store.db" in g for g in got), got
    assert any("SQL 'SELECT x FROM t'" in g for g in got), got
