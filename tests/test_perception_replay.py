"""Issue 16, done when: ``edgeloop sim --kind perception`` with ground truth, then ``edgeloop
replay trace pi.bin --out r`` with NO flags -> events for the confidence drift and the novel
class inside their windows, a health alert for the frozen camera, a scene change for the moved
camera; nothing outside them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 6 * 3600.0  # an event this long after a condition ended still belongs to it


def _cli(*args: str, cwd: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "edgeloop.cli", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _within(e: dict[str, Any], c: dict[str, Any], grace: float = 0.0) -> bool:
    return c["start_ts"] <= e["ts"] <= c["end_ts"] + grace


def test_replay_of_a_perception_trace_with_no_flags_catches_every_injected_condition(tmp_path: Path) -> None:
    _cli("sim", "--kind", "perception", "--days", "10", "--trace", "pi.bin", "--ground-truth", "gt.json", cwd=tmp_path)
    line = _cli("replay", "trace", "pi.bin", "--out", "r", cwd=tmp_path)
    assert "perception pi-000" in line, line
    gt = json.loads((tmp_path / "gt.json").read_text())["gate-cam"]["conditions"]
    cond = {c["kind"]: c for c in gt}
    assert set(cond) == {"conf_drift", "novel_class", "frozen", "moved"}
    events = [json.loads(x) for x in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]
    summary = [(e["kind"], e["metrics"], e["ts"]) for e in events]

    drift = [e for e in events if _within(e, cond["conf_drift"]) and "confidence" in e["metrics"]]
    assert drift and drift[0]["kind"] == "sustained" and drift[0]["directions"] == [-1], summary
    novel = [e for e in events if _within(e, cond["novel_class"]) and e["metrics"] == ["novel_class:deer"]]
    assert novel and novel[0]["kind"] == "novel", summary
    frozen = [e for e in events if _within(e, cond["frozen"]) and e["metrics"] == ["frozen"]]
    assert frozen and frozen[0]["kind"] == "health", summary
    assert abs(frozen[0]["start_ts"] - cond["frozen"]["start_ts"]) <= 120, "the episode starts when the frames froze"
    moved = [e for e in events if _within(e, cond["moved"]) and e["metrics"] == ["scene_change"]]
    assert moved, summary
    # every event belongs to an injected condition: no false alarms in ten days of a busy gate
    stray = [s for e, s in zip(events, summary, strict=True)
             if not any(_within(e, c, GRACE_S) for c in gt)]
    assert stray == [], stray
