"""Structured logs: every ``extra=`` field reaches the line (logfmt or JSON), one line per event;
the agent logs connect failures, disconnects and reconnects at INFO with the reason; the cloud's
stats line carries numbers; ``rules.decided`` carries the alert id."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from brokers import MosquittoBroker, free_port
from recs import record_of
from test_aggregator import T0, batch, event_body, make

from edgeloop import logs
from edgeloop.cli import build_parser
from shared import topics

ROOT = Path(__file__).resolve().parents[1]
EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
_PAIR = re.compile(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    """A logfmt line -> {key: value} (quoted values unescaped as JSON strings)."""
    out = {}
    for k, v in _PAIR.findall(line):
        out[k] = json.loads(v) if v.startswith('"') else v
    return out


def _record(**extra: object) -> logging.LogRecord:
    log = logging.getLogger("edgeloop.test")
    return log.makeRecord("edgeloop.test", logging.INFO, __file__, 1, "sync.connected", (), None, extra=extra)


def test_logfmt_shows_every_extra_field_and_quotes_what_needs_it() -> None:
    line = logs.LogfmtFormatter().format(_record(
        device_id="collar-000", session_present=False, n=3, ratio=0.5, reason='said "no" = refused',
        metrics=("resting_hr", "activity"), payload={"a": 1}, nothing=None))
    f = parse_logfmt(line)
    assert "\n" not in line
    assert f["level"] == "info" and f["logger"] == "edgeloop.test" and f["event"] == "sync.connected"
    assert f["device_id"] == "collar-000" and f["session_present"] == "false" and f["n"] == "3"
    assert f["ratio"] == "0.5" and f["reason"] == 'said "no" = refused' and f["nothing"] == "null"
    assert json.loads(f["metrics"]) == ["resting_hr", "activity"] and json.loads(f["payload"]) == {"a": 1}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", f["ts"])


def test_json_lines_carry_the_same_fields_and_tracebacks_stay_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "aggregator.tick_failed", (),
                                                sys.exc_info(), extra={"count": 2, "bad": float("nan")})
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["event"] == "aggregator.tick_failed" and obj["count"] == 2 and obj["bad"] == "nan"
    assert "ValueError: boom" in obj["exc"]
    text = logs.LogfmtFormatter().format(rec)
    assert "\n" not in text and "ValueError: boom" in parse_logfmt(text)["exc"]


def test_text_format_keeps_the_fields_too() -> None:
    line = logs.TextFormatter().format(_record(device_id="collar-7"))
    assert "sync.connected" in line and "device_id=collar-7" in line


def test_every_command_takes_the_log_format_flag() -> None:
    ap = build_parser()
    for argv in (["agent"], ["cloud"], ["sim", "--pty"], ["demo"], ["replay", "trace", "x", "--out", "o"],
                 ["alerts", "--individual", "b"]):
        args = ap.parse_args([*argv, "--log-format", "json"])
        assert args.log_format == "json", argv


def test_rules_decided_carries_the_alert_id() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.LogfmtFormatter())
    log = logging.getLogger("cloud.rules")
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.INFO)
    try:
        agg, _, _ = make()
        agg.handle_message(topics.uplink("collar-000"), batch(
            "collar-000", record_of(7, "event", T0 + 3 * 86400 + 7200, "bella", event_body())))
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
    decided = [parse_logfmt(x) for x in buf.getvalue().splitlines() if "event=rules.decided" in x]
    assert decided and decided[0]["alert_id"] == "collar-000:7"
    assert decided[0]["action"] == "notify" and decided[0]["individual_id"] == "bella"


def _wait_for(path: Path, pattern: str, timeout: float = 20.0, after: int = 0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines()[after:] if path.exists() else []
        for line in lines:
            if re.search(pattern, line):
                return parse_logfmt(line)
        time.sleep(0.1)
    raise AssertionError(f"no log line matching {pattern!r} in {timeout} s:\n{path.read_text()[-3000:]}")


@pytest.mark.mosquitto
def test_agent_logs_connect_failures_disconnects_and_reconnects(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    trace = tmp_path / "collar.bin"
    subprocess.run([*EDGELOOP, "sim", "--trace", str(trace), "--days", "0.05"], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)
    conf = tmp_path / "agent.toml"
    conf.write_text("[mqtt]\nreconnect_min = 0.2\nreconnect_max = 1.0\nkeepalive = 5\n")
    log = tmp_path / "agent.log"
    with open(log, "w") as err:
        agent = subprocess.Popen([*EDGELOOP, "agent", "--config", str(conf), "--source", str(trace),
                                  "--state-dir", str(tmp_path / "state"), "--broker", mosquitto.url,
                                  "--device-id", "collar-042", "--drain-timeout", "1"],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        first = _wait_for(log, r"event=sync\.connected")
        assert first["level"] == "info" and first["device_id"] == "collar-042"
        assert first["broker"] == mosquitto.url and first["reconnect"] == "false"
        n = len(log.read_text().splitlines())
        mosquitto.kill()
        gone = _wait_for(log, r"event=sync\.disconnected", after=n)
        assert gone["level"] == "info" and gone["reason"], "the broker's reason is on the line"
        failed = _wait_for(log, r"event=sync\.connect_failed", after=n)
        assert failed["level"] == "warning" and "ConnectionRefused" in failed["reason"]  # the first: a warning
        assert failed["attempt"] == "1" and "--broker" in failed["hint"]
        mosquitto.restart()
        back = _wait_for(log, r"event=sync\.connected.*reconnect=true", after=n)
        assert int(back["failed_attempts"]) >= 1
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)


def test_cloud_stats_line_carries_numbers(tmp_path: Path) -> None:
    """Against a port where nothing listens: connect failures are logged with the reason, and the
    stats line still comes, with numbers."""
    conf = tmp_path / "cloud.toml"
    conf.write_text(f"stats_every = 0.5\ndb = '{tmp_path / 'c.db'}'\n[mqtt]\nreconnect_min = 0.2\n"
                    f"reconnect_max = 1.0\n")
    cmd = [*EDGELOOP, "cloud", "--config", str(conf), "--broker", f"mqtt://127.0.0.1:{free_port()}",
           "--log-format", "json"]
    log = tmp_path / "cloud.log"
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for(log, r'"event":"cloud\.stats"', timeout=60)
        _wait_for(log, r'"event":"cloud\.connect_failed"', timeout=30)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    err_text = log.read_text()
    lines = [json.loads(x) for x in err_text.splitlines() if x.startswith("{")]
    assert lines, f"no JSON log lines from {shlex.join(cmd)}:\n{err_text[-2000:]}"
    stats = [x for x in lines if x["event"] == "cloud.stats"]
    s = stats[-1]
    for key in ("uptime_s", "messages", "records_new", "rejected", "notifications_sent", "inbox"):
        assert isinstance(s[key], int), (key, s)
    assert s["connected"] is False
    fails = [x for x in lines if x["event"] == "cloud.connect_failed"]
    assert fails and "ConnectionRefused" in fails[0]["reason"] and fails[0]["level"] == "warning"
    assert all(x["level"] == "info" for x in fails[1:] if x["attempt"] not in (10, 100))  # not one warning per retry
