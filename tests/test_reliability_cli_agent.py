"""The real ``edgeloop agent`` process (frames from a simulated collar trace -> minute windows ->
engine -> outbox -> MQTT) SIGKILLed at random points, then run to the end: its outbox passes
integrity_check after every kill and everything it accepted reaches the cloud."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from brokers import MosquittoBroker
from test_reliability_harness import (
    EDGELOOP,
    REPO,
    CloudProcess,
    DeviceSpec,
    check,
    fast_dir,
    integrity,
    print_table,
)

KILLS = 5


def _agent(trace: Path, state: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [str(EDGELOOP), "agent", "--source", str(trace), "--state-dir", str(state),
             "--device-id", "cli-1", "--broker", url, "--exit-on-eof", "--drain-timeout", "30"],
            stdout=f, stderr=f, stdin=subprocess.DEVNULL, cwd=str(REPO), start_new_session=True)


@pytest.mark.slow
def test_edgeloop_agent_process_sigkilled(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    rng = random.Random(6)
    work = fast_dir()
    cloud = CloudProcess(work / "cloud.db", mosquitto.url)
    p: subprocess.Popen[bytes] | None = None
    try:
        # not under /dev/shm: device/reader.open_source takes any /dev/ path for a serial port
        trace = tmp_path / "collar.bin"
        subprocess.run([str(EDGELOOP), "sim", "--trace", str(trace), "--days", "3", "--seed", "3"],
                       check=True, capture_output=True, cwd=str(REPO), timeout=120)
        cloud.start().wait_serving()
        state = work / "state"
        log = work / "agent.log"
        bad = []
        for i in range(KILLS):
            p = _agent(trace, state, mosquitto.url, log)
            time.sleep(rng.uniform(0.3, 4.0))
            alive = p.poll() is None
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            db = state / "outbox.db"
            if db.exists() and (res := integrity(db)) != "ok":
                bad.append((i, alive, res))
        p = _agent(trace, state, mosquitto.url, log)
        rc = p.wait(180)
        cloud.stop()
        spec = DeviceSpec("cli-1", state, mosquitto.url)
        out = check([spec], work / "cloud.db")
        row = {"scenario": "edgeloop agent SIGKILL", "kills": KILLS, **out.row(),
               "integrity_failures": len(bad), "final_exit": rc}
        print_table("edgeloop agent kills", [row])
        assert bad == []
        assert rc == 0, log.read_text()[-2000:]
        assert out.accepted >= 3, "the trace should give at least its daily summaries"
        assert out.lost == [] and out.unexpected == [] and out.duplicates == 0
        assert out.pending == 0 and out.stored == out.accepted
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)
