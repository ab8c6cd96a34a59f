"""``edgeloop replay trace``: one summary line, events.jsonl, a PNG with signals, baseline band,
scores and events, summary.json; progress lines on long runs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edgeloop import replay_trace as rt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "collar.bin"
    subprocess.run([sys.executable, "-m", "edgeloop.cli", "sim", "--trace", str(path), "--days", "2.5"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return path


def test_replay_trace_cli_prints_one_line_and_writes_plot_events_summary(tmp_path: Path, trace: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "edgeloop.cli", "replay", "trace", str(trace), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    assert "bella" in lines[0] and "2.5 days" in lines[0] and "windows" in lines[0] and "trace.png" in lines[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["windows"] == 3600 and summary["frames"] > 0 and summary["frames_rejected"] == 0
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == summary["events"] and all("trace" not in e for e in events)
    img = Image.open(out / "trace.png")
    assert img.format == "PNG" and img.size[0] >= 800 and img.size[1] >= 600
    # not a blank canvas: the panels hold lines and bands of several colours
    assert len(img.convert("RGB").getcolors(1 << 20) or []) > 50


def test_progress_lines_on_a_non_terminal(tmp_path: Path, trace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "PROGRESS_EVERY_S", 0.05)
    err = io.StringIO()
    summary = rt.replay_trace(trace, tmp_path / "o", progress=True, stream=err)
    lines = [x for x in err.getvalue().splitlines() if x.startswith("replay trace:")]
    assert lines and "% of" in lines[-1] and "days" in lines[-1], err.getvalue()[-500:]
    assert "\r" not in err.getvalue(), "plain lines when stderr is not a terminal"
    assert summary["days"] == 2.5
