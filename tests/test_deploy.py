"""The Raspberry Pi install, as far as this machine allows: the wheel builds with its models and
defaults and the entry point; the systemd unit passes ``systemd-analyze verify`` and has the
restart policy, state directory, journal logging and a persistent Numba cache; the example
/etc/edgeloop/agent.toml passes ``--validate-config``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "edgeloop-agent.service"
EXAMPLE = ROOT / "deploy" / "agent.toml"


def _unit() -> dict[str, dict[str, str]]:
    """{section: {key: value}}; a repeated key (Environment=) joins its values with newlines."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        sec = out.setdefault(section, {})
        sec[key] = f"{sec[key]}\n{value}" if key in sec else value
    return out


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        msg = "systemd-analyze not found: apt-get install systemd"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    # the unit as shipped, with ExecStart pointing at this checkout's entry point (verify checks
    # that the binary exists and is executable)
    exe = Path(sys.executable).parent / "edgeloop"
    assert exe.exists(), exe
    unit = tmp_path / "edgeloop-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgeloop/venv/bin/edgeloop", str(exe)))
    r = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "" and r.stdout.strip() == "", f"warnings: {r.stdout}{r.stderr}"


def test_unit_has_restart_state_journal_and_numba_cache() -> None:
    s = _unit()["Service"]
    assert s["Restart"] == "always" and float(s["RestartSec"]) > 0
    assert s["StateDirectory"] == "edgeloop" and s["WorkingDirectory"] == "/var/lib/edgeloop"
    assert s["StandardError"] == "journal" and s["StandardOutput"] == "journal"
    assert "NUMBA_CACHE_DIR=/var/lib/edgeloop/" in s["Environment"], "the JIT cache is on persistent storage"
    assert "dialout" in s["SupplementaryGroups"]
    assert "--config /etc/edgeloop/agent.toml" in s["ExecStart"] and "--log-format" in s["ExecStart"]
    assert "--validate-config" in s["ExecStartPre"]
    assert int(s["TimeoutStopSec"]) > 60, "longer than the agent's drain_timeout"
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def _validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeloop.cli", "agent", "--config", str(config), "--validate-config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_example_config_validates(tmp_path: Path) -> None:
    """The example as shipped, with the cloud's public key where the Pi would have it."""
    from shared.signing import generate_keypair, save_public_key

    key = save_public_key(tmp_path / "cloud.pub", generate_keypair()[1])
    text = EXAMPLE.read_text()
    assert '"/etc/edgeloop/cloud.pub"' in text
    config = tmp_path / "agent.toml"
    config.write_text(text.replace('"/etc/edgeloop/cloud.pub"', f'"{key}"'))
    r = _validate(config)
    assert r.returncode == 0, r.stderr
    assert "source='/dev/ttyUSB0'" in r.stdout and "state_dir='/var/lib/edgeloop'" in r.stdout
    assert "url='mqtts://" in r.stdout, "TLS to the broker"


def test_the_wheel_carries_models_defaults_and_the_entry_point(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = tmp_path.glob("edgeloop-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for needed in ("edgeloop/cli.py", "device/agent.py", "device/models/activity_v1.tflite",
                   "cloud/default_rules.toml", "shared/frames.py", "firmware_sim/run.py"):
        assert needed in names, f"{needed} missing from {whl.name}"
    ep = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "edgeloop = edgeloop.cli:main" in ep
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_example_config_without_the_cloud_key_names_it() -> None:
    """On a Pi where the key was not copied yet, ExecStartPre's validation says what is missing."""
    if Path("/etc/edgeloop/cloud.pub").exists():
        pytest.skip("this machine has /etc/edgeloop/cloud.pub")
    r = _validate(EXAMPLE)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "/etc/edgeloop/cloud.pub" in r.stderr and "--keygen" in r.stderr, r.stderr
