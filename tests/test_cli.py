"""Every subcommand's --help works and is documented; --validate-config names the bad key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_help_of_every_subcommand(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: edgeloop {cmd}") and len(out) > 200


def test_every_subcommand_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for cmd in COMMANDS:
        assert f"edgeloop {cmd}" in readme, f"README does not document 'edgeloop {cmd}'"


def test_entry_point_runs_as_a_process() -> None:
    r = subprocess.run([sys.executable, "-m", "edgeloop.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "demo" in r.stdout


@pytest.mark.parametrize("toml,where", [
    ("[mqtt]\nprot = 3\n", "mqtt -> prot: unknown key"),
    ("[mqtt]\nport = '1883'\n", "mqtt -> port: unknown key"),
    ("[mqtt]\nkeepalive = 'fast'\n", "mqtt -> keepalive: expected int"),
    ("[mqtt]\nkeepalive = 1\n", "keepalive: 1 must be 5..3600"),
    ("[outbox]\nmax_bytes = 10\n", "outbox -> max_bytes"),
    ("device_id = 'a/b'\n", "device id 'a/b' is invalid"),
    ("budget_ms = -1.0\n", "budget_ms"),
    ("kind = 'toaster'\n", "kind: 'toaster' is not one of"),
    ("[mqtt\n", "not valid TOML"),
])
def test_validate_config_reports_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          toml: str, where: str) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(toml)
    assert main(["agent", "--config", str(f), "--validate-config"]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and where in err
    assert len(err.strip().splitlines()) == 1, "one line: what was wrong and where"


def test_validate_config_accepts_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "cloud.toml"
    f.write_text("instance = 'c2'\n[mqtt]\nurl = 'mqtt://127.0.0.1:1884'\nprotocol = '3.1.1'\n")
    with pytest.raises(SystemExit) as exc:
        main(["cloud", "--config", str(f), "--validate-config"])
    assert exc.value.code == 0
    assert "instance='c2'" in capsys.readouterr().out


def test_show_config_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["agent", "--show-config"])
    out = capsys.readouterr().out
    for key in ("device_id", "mqtt.url", "mqtt.keepalive", "outbox.max_bytes", "budget_ms"):
        assert key in out


def test_missing_config_file_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "--config", "/nonexistent.toml", "--validate-config"]) == 2
    assert "not found" in capsys.readouterr().err


def test_parser_has_the_five_commands() -> None:
    actions = [a for a in build_parser()._actions if a.dest == "cmd"]
    assert set(actions[0].choices) >= {"sim", "agent", "cloud", "replay", "demo"}


def test_replay_nab_prints_one_line_and_writes_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["timestamp,value"] + [f"2014-04-01 {h:02d}:{m:02d}:00,{10 + (m % 7) * 0.1}"
                                  for h in range(24) for m in range(0, 60, 5)]  # fmt: skip
    rows[100] = "2014-04-01 00:05:00,10"  # time goes back
    rows[150] = "2014-04-01 12:30:00,x"  # garbage
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    assert main(["replay", "nab", str(tmp_path / "in.csv"), str(tmp_path / "out.csv"),
                 "--plot", str(tmp_path / "p.png")]) == 0  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "288 rows" in out[0] and "line 101" in out[0] and "line 151" in out[0]
    assert (tmp_path / "p.png").exists()
    assert main(["replay", "nab", str(tmp_path / "missing.csv"), str(tmp_path / "o.csv")]) == 2
    assert "replay nab:" in capsys.readouterr().err
