"""Replay helpers: NAB csv in, scores out; Stanford-format files in, events and a plot out."""

from __future__ import annotations

import csv
import lzma
from pathlib import Path

import numpy as np
import pytest

from device.replay import ReplayInputError, hourly_metrics, replay_nab_csv, replay_wearable
from edgeloop.evaluation.datasets import ENV_VAR, NAB_DIR, DataNotFoundError, dataset_dir


def _nab() -> Path | None:
    try:
        return dataset_dir(NAB_DIR) / "data"
    except DataNotFoundError:
        return None


NAB = _nab()


def _write_nab(path: Path, values: np.ndarray) -> list[str]:
    stamps = [str(np.datetime64("2014-04-01T00:00") + np.timedelta64(5 * i, "m")).replace("T", " ")
              for i in range(values.size)]  # fmt: skip
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for s, v in zip(stamps, values, strict=True):
            w.writerow([s, v])
    return stamps


def _read(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    return [r[0] for r in rows[1:]], np.array([float(r[2]) for r in rows[1:]])


def test_nab_replay_scores_are_causal_and_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = 10 + np.sin(np.arange(1500) * 2 * np.pi / 288) + rng.normal(0, 0.1, 1500)
    values[1200:1230] += 8.0
    stamps = _write_nab(tmp_path / "in.csv", values)
    replay_nab_csv(tmp_path / "in.csv", tmp_path / "out.csv")
    got_stamps, scores = _read(tmp_path / "out.csv")
    assert got_stamps == stamps
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[1200:1230].max() > scores[400:1190].max()
    # causal: the prefix scored alone gives the same scores
    _write_nab(tmp_path / "half.csv", values[:1210])
    replay_nab_csv(tmp_path / "half.csv", tmp_path / "half_out.csv")
    np.testing.assert_array_equal(_read(tmp_path / "half_out.csv")[1], scores[:1210])


def test_nab_replay_rejects_wrong_header(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("time,val\n2014-01-01 00:00:00,1\n")
    with pytest.raises(ReplayInputError, match="timestamp,value"):
        replay_nab_csv(tmp_path / "bad.csv", tmp_path / "out.csv")


@pytest.mark.skipif(NAB is None, reason=f"NAB data not available (set {ENV_VAR})")
def test_real_nab_file(tmp_path: Path) -> None:
    replay_nab_csv(NAB / "realTraffic" / "speed_7578.csv", tmp_path / "out.csv")
    _, scores = _read(tmp_path / "out.csv")
    assert scores.size == 1127 and np.all(np.isfinite(scores))


def _write_stanford(path: Path, column: str, stamps: list[str], values: np.ndarray) -> None:
    with lzma.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "user", "datetime", column])
        for i, (s, v) in enumerate(zip(stamps, values, strict=True)):
            w.writerow([i, "P1", s, int(v)])


def test_wearable_replay_writes_events_and_plot(tmp_path: Path) -> None:
    days = 40
    n = days * 1440
    t = np.datetime64("2020-03-01T00:00") + np.arange(n).astype("timedelta64[m]")
    stamps = [str(x).replace("T", " ") + ":00" for x in t]
    minute = np.arange(n) % 1440
    rng = np.random.default_rng(1)
    steps = np.where((minute > 8 * 60) & (minute < 20 * 60) & (rng.random(n) < 0.3), 40, 0)
    hr = 62 + rng.normal(0, 2, n) + 0.3 * steps
    hr[30 * 1440 :] += 12  # a sustained rise from day 30
    _write_stanford(tmp_path / "P1_hr.csv.xz", "heartrate", stamps, hr)
    _write_stanford(tmp_path / "P1_steps.csv.xz", "steps", stamps, steps)
    out = tmp_path / "out"
    summary = replay_wearable(tmp_path / "P1_hr.csv.xz", tmp_path / "P1_steps.csv.xz", out, "P1")
    assert summary["hours"] == days * 24
    assert (out / "events.csv").exists() and Path(str(summary["plot"])).stat().st_size > 1000
    event_days = [(np.datetime64(e) - t[0]) / np.timedelta64(1, "D") for e in summary["events"]]
    assert event_days and 30 <= event_days[0] <= 31.5
    assert all(d >= 30 for d in event_days)


def test_hourly_metrics_marks_unworn_hours() -> None:
    t = 60.0 * np.arange(3 * 60)
    hr = np.full(t.size, 60.0)
    hr[60:120] = np.nan  # hour 1 not worn
    grid, vals = hourly_metrics(t, hr, t, np.zeros(t.size))
    assert grid.tolist() == [3600.0, 7200.0, 10800.0]  # hour ends
    assert np.isnan(vals[1]).all() and vals[2, 1] == 0.0 and vals[2, 0] == 60.0


def test_hourly_rest_counts_worn_still_minutes_per_day() -> None:
    n = 2 * 1440
    t = 60.0 * np.arange(n)
    minute = np.arange(n) % 1440
    steps = np.where(minute >= 8 * 60, 30.0, 0.0)  # still 00:00-08:00, walking the rest of the day
    hr = np.full(n, 60.0)
    hr[1440 + 20 * 60:1440 + 22 * 60] = np.nan  # day 2, 20-22 h: watch off (steps still zero-filled)
    steps[1440 + 20 * 60:1440 + 22 * 60] = 0.0
    grid, vals = hourly_metrics(t, hr, t, steps, with_rest=True)
    assert vals.shape == (48, 3)
    assert np.isnan(vals[:5, 2]).all(), "fewer than 6 worn hours in the window: no value yet"
    # day 2, 08-20 h: the trailing 24 h hold the night's 8 h still; rest begins at its 12th still minute
    np.testing.assert_allclose(vals[1 * 24 + 8:1 * 24 + 20, 2], 24.0 * (8 * 60 - 11) / 1440)
    assert np.isnan(vals[24 + 20:24 + 22, 2]).all(), "hours the watch was off have no value"
    # at 23 h the off hours are out of the denominator and were not counted as rest
    np.testing.assert_allclose(vals[24 + 22, 2], 24.0 * (8 * 60 - 11) / (1440 - 120))
    _, plain = hourly_metrics(t, hr, t, steps)
    np.testing.assert_array_equal(plain, vals[:, :2])


def test_nab_replay_of_a_messy_file_scores_every_row_and_says_what_it_saw(tmp_path: Path) -> None:
    """Issue 12/13: a time that goes backwards is scored (not refused), garbage names its line,
    every input row gets an output row, and a PNG can be written."""
    rng = np.random.default_rng(2)
    values = 10 + rng.normal(0, 0.1, 600)
    stamps = _write_nab(tmp_path / "in.csv", values)
    lines = (tmp_path / "in.csv").read_text().splitlines()
    lines[301] = f"{stamps[298]},{values[300]}"  # line 302: a time seen three rows before
    lines[401] = f"{stamps[400]},not-a-number"  # line 402: garbage value
    lines[451] = f"yesterday,{values[450]}"  # line 452: garbage time
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    s = replay_nab_csv(tmp_path / "in.csv", tmp_path / "out.csv", plot=tmp_path / "p.png")
    got_stamps, scores = _read(tmp_path / "out.csv")
    assert len(got_stamps) == 600 and np.all(np.isfinite(scores))
    assert got_stamps[450] == "yesterday"
    assert (s.rows, s.out_of_order, s.first_out_of_order_line) == (600, 1, 302)
    assert s.problems.lines == {"bad values (scored as missing)": [402],
                                "bad timestamps (row scored with the previous score)": [452]}  # fmt: skip
    assert scores[300] == scores[299]  # the repeated time keeps the previous score
    line = s.line()
    assert "600 rows" in line and "line 302" in line and "line 402" in line and "line 452" in line
    assert (tmp_path / "p.png").stat().st_size > 5000


def test_wearable_garbage_rows_name_their_line(tmp_path: Path) -> None:
    n = 3 * 1440
    t = np.datetime64("2020-03-01T00:00") + np.arange(n).astype("timedelta64[m]")
    stamps = [str(x).replace("T", " ") + ":00" for x in t]
    _write_stanford(tmp_path / "hr.csv.xz", "heartrate", stamps, np.full(n, 60.0))
    _write_stanford(tmp_path / "st.csv.xz", "steps", stamps, np.zeros(n))
    with lzma.open(tmp_path / "hr.csv.xz", "at") as fh:
        fh.write("9,P1,2020-03-04 00:00:00,n/a\n")  # line n + 2
    out = replay_wearable(tmp_path / "hr.csv.xz", tmp_path / "st.csv.xz", tmp_path / "o", "P1",
                          onset=np.datetime64("2020-03-02"))  # fmt: skip
    assert out["problems"] == {"garbage rows in hr.csv.xz (skipped)": 1}
    assert f"line {n + 2}" in str(out["line"]) and (tmp_path / "o" / "nights.csv").exists()
