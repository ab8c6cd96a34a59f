"""The device process loads what a device needs and nothing heavy (issue 15, a lean device process).

A fresh interpreter runs ``edgeloop agent`` (the real CLI, offline) over a short collar trace with
a cloud key, so the lazy imports of a running agent happen too, then lists ``sys.modules``. A
correctness check, not a timing one: a module named here must not be imported on the device path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.signing import generate_keypair, save_public_key

REPO = Path(__file__).resolve().parents[1]

#: never on the device path: plotting, the cloud, simulators, evaluation and training code, the
#: brokers and stores the cloud uses, sqlite-utils' CLI and plugin stack (the outbox uses sqlite3)
NEVER = ("matplotlib", "PIL", "pandas", "river", "amqtt", "sqlite_utils", "click", "pluggy",
         "cloud", "fleet_sim", "firmware_sim", "edgeloop.evaluation", "edgeloop.demo",
         "edgeloop.demo_report", "device.replay")  # fmt: skip
#: the compiler stack: not loaded when the kernels were compiled ahead of time (numba imports
#: scipy itself, so scipy comes with the JIT path only)
COMPILER = ("numba", "llvmlite", "scipy")

_RUN = """
import json, sys
from edgeloop.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("device")
    trace = d / "collar.trace"
    subprocess.run([sys.executable, "-m", "edgeloop", "sim", "--days", "0.3", "--trace", str(trace)],
                   check=True, capture_output=True, timeout=120, cwd=REPO)  # fmt: skip
    _, pub = generate_keypair()
    save_public_key(d / "cloud.pub", pub)
    return {"dir": d, "trace": trace, "pub": d / "cloud.pub"}


def _agent_modules(device: dict[str, Path], kernels: str) -> set[str]:
    state = device["dir"] / f"state-{kernels}"
    env = {**os.environ, "EDGELOOP_KERNELS": kernels}
    env.pop("NUMBA_DISABLE_JIT", None)
    r = subprocess.run([sys.executable, "-c", _RUN, "agent", "--source", str(device["trace"]),
                        "--device-id", "lean-1", "--state-dir", str(state), "--offline",
                        "--exit-on-eof", "--cloud-public-key", str(device["pub"])],
                       env=env, capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    final, out = json.loads(lines[-2])["final"], json.loads(lines[-1])
    assert out["code"] == 0 and final["ingest"]["windows"] > 300, "the agent ran over the trace"
    assert final["kernels"]["path"] == kernels
    return set(out["modules"])


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_the_device_path_with_ahead_of_time_kernels_loads_no_compiler(device: dict[str, Path]) -> None:
    mods = _agent_modules(device, "aot")
    assert _loaded(mods, NEVER + COMPILER) == []
    # what it does need is there: the TFLite runtime, the serial reader, MQTT, signatures
    assert {"ai_edge_litert.interpreter", "serial", "paho.mqtt.client", "device.agent"} <= mods


def test_the_jit_path_adds_only_the_compiler(device: dict[str, Path]) -> None:
    mods = _agent_modules(device, "jit")
    assert _loaded(mods, NEVER) == []
    assert "numba" in mods
