"""The README's hand-run recipe, as written: ``sim --pty`` in the background, a cloud, then an agent
on the printed pty, with a person's delay between the steps. The simulator holds its stream until
the agent has opened the port, so the device-info frame arrives and every record is filed under
the animal's name; the simulator exits once the agent closed the port."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from brokers import MosquittoBroker

from firmware_sim.scenario import default_fleet

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
DAYS = 1.0


def _readme_recipe() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("Run an agent by hand against the system broker:", 1)[1].split("```bash", 1)[1]
    return [line.split("#")[0].strip().rstrip("&").strip() for line in block.split("```", 1)[0].strip().splitlines()]


def test_the_recipe_in_the_readme_is_the_one_tested() -> None:
    lines = _readme_recipe()
    assert lines[0].startswith(".venv/bin/edgeloop sim --pty")
    assert lines[1].startswith(".venv/bin/edgeloop cloud --db cloud.db")
    assert lines[2].startswith(".venv/bin/edgeloop agent --source /dev/pts/N --device-id collar-000 --exit-on-eof")


@pytest.mark.mosquitto
def test_readme_recipe_files_records_under_the_animals_name(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    name = default_fleet(5, DAYS, 7)[0].individual_id
    with open(tmp_path / "sim.log", "w") as sim_log, open(tmp_path / "cloud.log", "w") as cloud_log:
        sim = subprocess.Popen([*EDGELOOP, "sim", "--pty", "--days", str(DAYS)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=sim_log, text=True)
        _run_recipe(tmp_path, mosquitto, sim, cloud_log, name)


def _run_recipe(tmp_path: Path, mosquitto: MosquittoBroker, sim: subprocess.Popen[str], cloud_log, name: str) -> None:  # type: ignore[no-untyped-def]
    cloud = agent = None
    db = tmp_path / "cloud.db"
    try:
        assert sim.stdout is not None
        pty = sim.stdout.readline().strip()
        assert pty.startswith("/dev/pts/"), pty
        time.sleep(2.0)  # a person copies the path, starts the cloud: the old simulator had written by now
        cloud = subprocess.Popen([*EDGELOOP, "cloud", "--db", str(db), "--broker", mosquitto.url], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=cloud_log)
        time.sleep(1.0)
        agent = subprocess.run([*EDGELOOP, "agent", "--source", pty, "--device-id", "collar-000", "--exit-on-eof",
                                "--broker", mosquitto.url, "--state-dir", str(tmp_path / "state")],
                               cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert agent.returncode == 0, agent.stderr[-3000:]
        final = json.loads(agent.stdout.strip().splitlines()[-1])["final"]
        assert final["individual_id"] == name, "the device-info frame was read"
        assert final["ingest"]["bytes_rejected"] == 0 and final["ingest"]["resyncs"] == 0, "nothing was lost at the start"
        assert final["pending"] == 0, "the cloud acknowledged everything"
        assert sim.wait(30) == 0, "the simulator exits once the agent has closed the port"
    finally:
        for p in (cloud, sim):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        assert sim.stdout is not None
        sim.stdout.close()
    rows = sqlite3.connect(db).execute("SELECT individual_id, COUNT(*) FROM records GROUP BY 1").fetchall()
    assert rows and [r[0] for r in rows] == [name], f"records filed under {rows}, expected only {name!r}"
