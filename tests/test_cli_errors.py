"""Errors a person reads (issue 11, item 11), through the real CLI in a subprocess: bad input ends
in one line on stderr that names the problem and the fix, exit status 2, never a traceback; an
absent serial port is waited for; an unreachable broker is a warning at the default level."""

from __future__ import annotations

import json
import lzma
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from brokers import free_port

from cloud.store.db import CloudStore

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGELOOP, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)


def error_line(r: subprocess.CompletedProcess[str], *names: str, progress: str = "") -> str:
    """The one line a person reads: exit 2, no traceback, the only stderr line besides log lines and
    progress lines starting with ``progress``; it must contain every string in ``names``."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [x for x in r.stderr.splitlines()
             if x.strip() and "level=" not in x and not x.startswith("INFO: Created TensorFlow")
             and not (progress and x.startswith(progress))]
    assert len(lines) == 1, r.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _xz(path: Path, text: bytes) -> Path:
    path.write_bytes(lzma.compress(text))
    return path


HR = b",user,datetime,heartrate\n0,u,2020-01-01 00:00:00,60\n1,u,2020-01-01 00:00:05,61\n"
STEPS = b",user,datetime,steps\n0,u,2020-01-01 00:00:00,0\n"


def test_replay_trace_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    r = run("replay", "trace", str(tmp_path / "nope.trace"), "--out", str(tmp_path / "out"))
    line = error_line(r, "nope.trace", "No such file")
    assert "pass an existing trace file" in line
    assert not (tmp_path / "out").exists(), "nothing written for a trace that is not there"


def test_agent_on_a_missing_trace_fails_at_once(tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = run("agent", "--source", str(tmp_path / "nope"), "--offline", "--state-dir", str(tmp_path / "s"),
            "--device-id", "d1")
    error_line(r, str(tmp_path / "nope"), "trace file")
    assert time.monotonic() - t0 < 60


def test_agent_without_a_source_names_the_flag(tmp_path: Path) -> None:
    r = run("agent", "--offline", "--state-dir", str(tmp_path / "s"), "--device-id", "d1")
    error_line(r, "--source")


@pytest.mark.skipif(not os.access("/dev", os.W_OK), reason="needs root: the test plugs a 'device' into /dev")
def test_agent_waits_for_an_absent_serial_port_and_reads_it_once_plugged(tmp_path: Path) -> None:
    """A USB collar plugged in after the agent started: the agent logs one waiting line, keeps
    waiting (backoff), and reads the port once it appears."""
    port = Path(f"/dev/ttyEDGELOOPTEST{uuid.uuid4().hex[:8]}")
    log = tmp_path / "agent.log"
    sim = None
    with open(log, "w") as err:
        agent = subprocess.Popen([*EDGELOOP, "agent", "--source", str(port), "--offline", "--exit-on-eof",
                                  "--state-dir", str(tmp_path / "s"), "--device-id", "collar-9"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while "reader.waiting" not in log.read_text() and time.monotonic() < deadline:
            assert agent.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(4.0)  # several retries of the backoff
        assert agent.poll() is None, "an absent serial port is waited for, not an error"
        waiting = [x for x in log.read_text().splitlines() if "reader.waiting" in x]
        assert len(waiting) == 1 and f"waiting for {port}" in waiting[0], waiting
        sim = subprocess.Popen([*EDGELOOP, "sim", "--pty", "--days", "0.1"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        assert sim.stdout is not None
        pty = sim.stdout.readline().strip()
        port.symlink_to(pty)  # the device appears
        out, _ = agent.communicate(timeout=180)
        assert agent.returncode == 0, log.read_text()[-3000:]
        final = json.loads(out.strip().splitlines()[-1])["final"]
        assert final["ingest"]["frames_ok"] > 100, final["ingest"]
        assert "reader.appeared" in log.read_text()
    finally:
        port.unlink(missing_ok=True)
        for p in (agent, sim):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
            if p is not None and p.stdout is not None:
                p.stdout.close()


@pytest.mark.skipif(not os.access("/dev", os.W_OK), reason="needs root: the test plugs a 'device' into /dev")
def test_agent_waits_for_a_serial_device_that_went_away(tmp_path: Path) -> None:
    """A collar unplugged mid-stream (its pty closed) is waited for and read again when it comes
    back; the agent neither exits nor idles on a dead port."""
    port = Path(f"/dev/ttyEDGELOOPTEST{uuid.uuid4().hex[:8]}")
    log, out = tmp_path / "agent.log", tmp_path / "agent.out"
    sims: list[subprocess.Popen[str]] = []

    def plug(start: float) -> None:
        sim = subprocess.Popen([*EDGELOOP, "sim", "--pty", "--days", "0.1", "--start", str(start)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        sims.append(sim)
        assert sim.stdout is not None
        pty = sim.stdout.readline().strip()
        port.unlink(missing_ok=True)
        port.symlink_to(pty)

    def windows() -> int:
        lines = [json.loads(x) for x in out.read_text().splitlines() if x.startswith('{"device_id"')]
        return lines[-1]["windows"] if lines else 0

    def wait_until(pred: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 90
        while not pred():
            assert time.monotonic() < deadline and agent.poll() is None, (what, log.read_text()[-3000:])
            time.sleep(0.2)

    with open(log, "w") as err, open(out, "w") as stdout:
        agent = subprocess.Popen([*EDGELOOP, "agent", "--source", str(port), "--offline", "--progress",
                                  "--state-dir", str(tmp_path / "s"), "--device-id", "collar-9"],
                                 cwd=ROOT, stdout=stdout, stderr=err, text=True, env=ENV)
    try:
        plug(1767571200.0)
        wait_until(lambda: windows() >= 100, "the first plug's minutes")
        sims[0].kill()  # unplugged mid-stream
        sims[0].wait(10)
        wait_until(lambda: "reader.lost" in log.read_text() and "reader.waiting" in log.read_text(),
                   "the loss noticed")
        first = windows()
        time.sleep(2.0)
        assert agent.poll() is None, "a device that went away is waited for, not the end"
        plug(1767571200.0 + 86400.0)  # plugged back in (a day later)
        wait_until(lambda: windows() > first + 50, "minutes from the device plugged back in")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, log.read_text()[-3000:]
        final = json.loads(out.read_text().strip().splitlines()[-1])["final"]
        assert final["ingest"]["source_lost"] == 1 and final["ingest"]["source_reopened"] == 1, final["ingest"]
        assert log.read_text().count("reader.lost") == 1
    finally:
        port.unlink(missing_ok=True)
        for p in (agent, *sims):
            if p.poll() is None:
                p.kill()
                p.wait(30)
            if p.stdout is not None:
                p.stdout.close()


def test_empty_xz_names_the_file(tmp_path: Path) -> None:
    hr = tmp_path / "p_hr.csv.xz"
    hr.write_bytes(b"")
    steps = _xz(tmp_path / "p_steps.csv.xz", STEPS)
    r = run("replay", "wearable", "--hr", str(hr), "--steps", str(steps), "--id", "p", "--out", str(tmp_path / "o"))
    error_line(r, str(hr), "empty", progress="p: ")


def test_truncated_xz_names_the_file_and_line(tmp_path: Path) -> None:
    rows = b",user,datetime,heartrate\n" + b"".join(
        f"{i},u,2020-01-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d},60\n".encode() for i in range(20000))
    data = lzma.compress(rows)
    hr = tmp_path / "p_hr.csv.xz"
    hr.write_bytes(data[: len(data) // 2])
    steps = _xz(tmp_path / "p_steps.csv.xz", STEPS)
    r = run("replay", "wearable", "--hr", str(hr), "--steps", str(steps), "--id", "p", "--out", str(tmp_path / "o"))
    line = error_line(r, str(hr), "truncated or corrupt after line ", progress="p: ")
    assert int(line.split("after line ")[1].split()[0]) > 1000


def test_garbage_bytes_in_a_wearable_row_are_counted_with_file_and_line(tmp_path: Path) -> None:
    hr = _xz(tmp_path / "p_hr.csv.xz", HR + b"2,u,2020-01-01 00:00:1\xff,\xfe\x00\n3,u,2020-01-01 00:00:15,62\n")
    steps = _xz(tmp_path / "p_steps.csv.xz", STEPS)
    r = run("replay", "wearable", "--hr", str(hr), "--steps", str(steps), "--id", "p", "--out", str(tmp_path / "o"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "1 garbage rows in p_hr.csv.xz (skipped) (line 4)" in r.stdout, r.stdout


def test_garbage_in_a_nab_file_is_counted_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "series.csv"
    f.write_bytes(b"timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,\xff\xfe\n"
                  b"2020-01-01 00:10:00,1e999\n2020-01-01 00:15:00,2\n")
    r = run("replay", "nab", str(f), str(tmp_path / "out.csv"))
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    assert r.stdout.startswith(str(f)) and "2 bad values (scored as missing) (lines 3, 4)" in r.stdout, r.stdout


def test_a_nab_row_csv_cannot_split_names_its_line(tmp_path: Path) -> None:
    f = tmp_path / "series.csv"
    f.write_text('timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,2\n2020-01-01 00:10:00,"'
                 + "x" * 200_000 + '"\n')
    r = run("replay", "nab", str(f), str(tmp_path / "out.csv"))
    error_line(r, str(f), "line 4", "field larger than field limit")


def test_unwritable_db_names_the_path(tmp_path: Path) -> None:
    db = tmp_path / "no-such-folder" / "cloud.db"
    r = run("cloud", "--db", str(db), "--broker", f"mqtt://127.0.0.1:{free_port()}")
    error_line(r, str(db), "folder exists and is writable")
    junk = tmp_path / "notes.txt"
    junk.write_text("not a database\n" * 100)
    error_line(run("quality", "--db", str(junk)), str(junk), "not a database")


@pytest.mark.parametrize("argv", [["alerts", "--individual", "bella"], ["quality"], ["release", "status"],
                                  ["feedback", "d1:x:1", "confirm", "--individual", "bella"]])
def test_reading_a_db_that_is_not_there_does_not_create_it(tmp_path: Path, argv: list[str]) -> None:
    db = tmp_path / "nonexist.db"
    r = run(*argv, "--db", str(db))
    error_line(r, str(db), "edgeloop cloud --db")
    assert not db.exists(), "a command that reads the store must not create an empty one"


def test_release_status_hints_at_the_cli_not_a_function(tmp_path: Path) -> None:
    db = tmp_path / "cloud.db"
    CloudStore(db).close()
    line = error_line(run("release", "status", "7", "--db", str(db)), "rollout 7 not found")
    assert "`edgeloop release status`" in line and "(store)" not in line and "rollout_ids" not in line


def test_validate_config_runs_the_clouds_own_checks(tmp_path: Path) -> None:
    rules = tmp_path / "bad.toml"
    rules.write_text('[[rules]]\nname = "x"\nbogus = 1\n')
    r = run("cloud", "--rules", str(rules), "--validate-config")
    error_line(r, "config error", str(rules), "bogus")
    assert "config OK" not in r.stdout
    key = tmp_path / "cloud.key"
    key.write_text("not a key")
    error_line(run("cloud", "--validate-config", "--config", _toml(tmp_path, f"signing_key = '{key}'\n")),
               "signing_key", str(key))
    good = run("cloud", "--validate-config")
    assert good.returncode == 0 and good.stdout.startswith("config OK"), good.stderr[-2000:]


def _toml(tmp_path: Path, text: str) -> str:
    p = tmp_path / "cloud.toml"
    p.write_text(text)
    return str(p)


class SilentBroker:
    """A port that accepts TCP connections and closes them without a CONNACK (a wrong service, a
    proxy whose broker is down): paho reports a disconnect, not a failed connect."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("broker", ["refused", "silent"])
@pytest.mark.parametrize("cmd", ["agent", "cloud"])
def test_unreachable_broker_is_a_warning_at_the_default_level(tmp_path: Path, cmd: str, broker: str) -> None:
    silent = SilentBroker() if broker == "silent" else None
    url = f"mqtt://127.0.0.1:{silent.port if silent else free_port()}"
    conf = _toml(tmp_path, "[mqtt]\nreconnect_min = 0.2\nreconnect_max = 0.5\n")
    trace = tmp_path / "empty.trace"
    trace.write_bytes(b"")
    argv = (["agent", "--source", str(trace), "--state-dir", str(tmp_path / "s"), "--device-id", "d1"]
            if cmd == "agent" else ["cloud", "--db", str(tmp_path / "c.db")])
    log = tmp_path / "err.log"
    with open(log, "w") as err:
        p = subprocess.Popen([*EDGELOOP, *argv, "--config", conf, "--broker", url], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_fails(log)) < 3:
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        if silent is not None:
            silent.close()
    fails = _fails(log)
    assert len(fails) >= 3, log.read_text()[-3000:]  # it retries
    assert "level=warning" in fails[0] and url in fails[0] and "--broker" in fails[0], fails[0]
    assert all("level=info" in x for x in fails[1:3]), "one warning, not one per retry"


def _fails(log: Path) -> list[str]:
    return [x for x in log.read_text().splitlines() if "connect_failed" in x]


def test_agent_setup_files_are_named_with_the_fix(tmp_path: Path) -> None:
    trace = tmp_path / "t.trace"
    trace.write_bytes(b"")
    afile = tmp_path / "afile"
    afile.write_text("not a folder, not a key\n")
    base = ["agent", "--source", str(trace), "--offline", "--device-id", "d1"]
    error_line(run(*base, "--state-dir", str(afile / "state")), str(afile / "state"), "--state-dir")
    missing = tmp_path / "cloud.pub"
    error_line(run(*base, "--state-dir", str(tmp_path / "s"), "--cloud-public-key", str(missing)),
               str(missing), "--keygen")
    error_line(run(*base, "--state-dir", str(tmp_path / "s"), "--cloud-public-key", str(afile)), str(afile),
               "not an Ed25519 public key")
    r = run("agent", "--validate-config", "--cloud-public-key", str(afile))
    error_line(r, "cloud_public_key", str(afile))
    assert "config OK" not in r.stdout


def test_sim_into_an_unusable_trace_path_names_it(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "x.trace"
    error_line(run("sim", "--days", "0.01", "--trace", str(path)), str(path), "--trace")


def test_replay_trace_into_an_unusable_folder_names_it(tmp_path: Path) -> None:
    trace = tmp_path / "t.trace"
    trace.write_bytes(b"")
    afile = tmp_path / "afile"
    afile.write_text("x")
    error_line(run("replay", "trace", str(trace), "--out", str(afile / "out")), str(afile / "out"), "--out")


@pytest.mark.parametrize("action", ["check", "rollout"])
def test_a_release_is_not_checked_against_an_empty_new_store(tmp_path: Path, action: str) -> None:
    """A release check against a --db that is not there used to create an empty store and pass
    the candidate (no regression cases to fail)."""
    from shared.bundles import build_bundle
    from shared.signing import generate_keypair

    priv, _ = generate_keypair()
    bundle = tmp_path / "c.bundle"
    bundle.write_bytes(build_bundle(b"m", {"min_score": 0.2}, name="collar", version=2, private_key=priv,
                                    device_class="collar-v1"))
    db = tmp_path / "typo.db"
    r = run("release", action, str(bundle), "--db", str(db))
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.stdout, r.stderr[-2000:])
    assert f"no cloud database at {db}" in r.stdout and "PASSED" not in r.stdout
    assert not db.exists()
