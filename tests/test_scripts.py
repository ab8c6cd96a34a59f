"""Every script the README names runs when invoked by its path (shebang -> the right venv)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON_SCRIPTS = ("bench_agent", "bench_fleet", "bench_flood", "bench_model", "bench_outbox", "bench_perception",
                  "bench_quality", "bench_scoring", "chaos", "fuzz_frames",
                  "sim_feedback_loop", "train_activity", "nab_folds")


@pytest.mark.parametrize("name", PYTHON_SCRIPTS)
def test_script_answers_help_by_its_path(name: str) -> None:
    path = REPO / "scripts" / name
    assert os.access(path, os.X_OK), f"{path} must be executable"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"  # no venv on PATH: the shebang must find the project's
    r = subprocess.run([str(path), "--help"], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout.lower(), r.stdout[:500]


def test_every_python_script_is_linted() -> None:
    """Scripts have no .py suffix: pyproject's extend-include must name each (ruff skips them else)."""
    text = (REPO / "pyproject.toml").read_text()
    on_disk = {p.name for p in (REPO / "scripts").iterdir()
               if p.is_file() and "python" in p.read_text(errors="replace").splitlines()[0]}
    assert set(PYTHON_SCRIPTS) == on_disk
    for name in on_disk:
        assert f'"scripts/{name}"' in text or ('"scripts/bench_*"' in text and name.startswith("bench_")), name


@pytest.mark.slow
def test_bench_agent_quick_prints_the_memory_table() -> None:
    """scripts/bench_agent runs as a fresh clone would (after scripts/setup) and prints its table."""
    r = subprocess.run([str(REPO / "scripts" / "bench_agent"), "--quick", "--paths", "aot"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "floor: python -c 'import numpy, sqlite3, paho.mqtt.client'" in out
    for row in ("agent, live collar (pty)", "agent, trace replay"):
        line = next(x for x in out.splitlines() if x.startswith(row))
        kernels, steady, peak, ratio, cold = line.split()[-9:-4]
        assert kernels == "aot" and 0 < float(steady) <= float(peak) * 1.05 and float(ratio) > 1, line
        assert 0 < float(cold) < 60, line
    live = next(x for x in out.splitlines() if x.startswith("agent, live collar (pty)"))
    assert 0 < float(live.split()[-2]) < 100, "CPU % of one core at real time"
    assert "kernels aot (EDGELOOP_KERNELS=aot" in out


@pytest.mark.slow
@pytest.mark.mosquitto
def test_bench_fleet_quick_prints_its_table_and_exactly_once() -> None:
    """scripts/bench_fleet at CI size: every run's row, the peers, and the exactly-once verdict."""
    from pgdb import require_postgres

    require_postgres()
    r = subprocess.run([str(REPO / "scripts" / "bench_fleet"), "--quick"], cwd=REPO,
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    assert "PostgreSQL runs skipped" not in r.stderr, r.stderr[-2000:]
    rows = [x for x in out.splitlines() if x.startswith(("sqlite ", "postgresql "))]
    for label in ("sqlite     1 agg", "sqlite     2 agg", "postgresql 1 agg", "postgresql 2 agg",
                  "postgresql 2 agg, one SIGKILLed"):
        row = next((x for x in rows if x.startswith(label + " ") or x.startswith(label)), None)
        assert row is not None, f"no {label!r} row in:\n{out}\n{r.stderr[-2000:]}"
        events, rate = row[34:].split()[:2]
        assert int(events) == 160 and float(rate.replace(",", "")) > 0, row
        assert row.split()[-2:] == ["0", "0"], f"lost / duplicated: {row}"
    assert "peer: raw paho -> mosquitto QoS 1" in out and "peer: bare psycopg insert loop" in out
    assert "exactly once: every event stored once and decided once in every run" in out


def test_bench_fleet_in_process_prints_where_the_time_goes() -> None:
    """``scripts/bench_fleet --in-process --quick``: per-record decode and encode against json's own,
    and one aggregator's rate with its time split into decoding, storing and deciding, per back end."""
    from pgdb import require_postgres

    require_postgres()
    r = subprocess.run([str(REPO / "scripts" / "bench_fleet"), "--in-process", "--quick"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert re.search(r"decode_batch [\d.]+ us per record \(json\.loads of the same bytes [\d.]+ us: [\d.]+x\)",
                     r.stdout), r.stdout
    for backend in ("sqlite", "postgresql"):
        line = next((x for x in r.stdout.splitlines() if x.startswith(f"in process, {backend} ")), "")
        m = re.search(r"([\d,]+) events/s .* decode (\d+) %, store (\d+) %, decide (\d+) %", line)
        assert m is not None and int(m[1].replace(",", "")) > 0, r.stdout
        assert 0 < sum(int(m[k]) for k in (2, 3, 4)) <= 100, line
