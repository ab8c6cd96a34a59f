"""The demo on both store back ends (issue 14): the same run on SQLite and on PostgreSQL gives the
same report, every record stored exactly once; a PostgreSQL store that already holds records is
refused (the report counts what this run stored)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pgdb import scratch_database

DEMO = [sys.executable, "-m", "edgeloop", "demo", "--collars", "2", "--days", "6"]


def _summary(out: str) -> list[str]:
    """The report's SUMMARY block without the lines that name paths."""
    lines = out[out.index("SUMMARY"):].splitlines()
    return [ln for ln in lines if not ln.strip().startswith(("plot:", "cloud store:"))]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_demo_gives_the_same_report_on_sqlite_and_postgresql(tmp_path: Path) -> None:
    lite = subprocess.run([*DEMO, "--out", str(tmp_path / "lite")], capture_output=True, text=True, timeout=240)
    assert lite.returncode == 0, lite.stderr[-2000:]
    with scratch_database() as url:
        pg = subprocess.run([*DEMO, "--out", str(tmp_path / "pg"), "--db", url], capture_output=True, text=True,
                            timeout=240)
        assert pg.returncode == 0, pg.stderr[-2000:]
        again = subprocess.run([*DEMO, "--out", str(tmp_path / "again"), "--db", url], capture_output=True,
                               text=True, timeout=120)
    assert "OK: every record the agents wrote is stored exactly once" in pg.stdout, pg.stdout[-2000:]
    assert f"cloud store: {url}" in pg.stdout
    assert _summary(pg.stdout) == _summary(lite.stdout)
    assert again.returncode == 2
    assert "already holds" in again.stderr and "needs an empty store" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
