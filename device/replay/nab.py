"""NAB replay: ``timestamp,value`` -> ``timestamp,value,anomaly_score``, one Engine per file.

Real files are messy, and every row of the input gets a row of output (NAB's scorer needs them
all): a timestamp that repeats or goes backwards is scored as the engine scores it (the row is
not learnt and keeps the previous score, flag 2), a value that is not a number is a missing
value, a timestamp that is not one is a rejected row; the summary says how many of each and the
first line numbers. Scoring runs in chunks (bit-identical to one batch) so a long file reports
progress.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.detect.engine import Engine
from device.kernels.layout import FLAG_ORDER
from device.replay.common import (
    Progress,
    ReplayInputError,
    RowProblems,
    csv_rows,
    parse_float,
    parse_time,
)

logger = logging.getLogger(__name__)

ALERT_SCORE = 0.5  # read combined >= 0.5 as "alert" (device/detect/README.md)
CHUNK_ROWS = 50_000


@dataclass
class NabReplaySummary:
    """What a NAB replay saw."""

    path: str
    rows: int = 0
    alerts: int = 0  # rows scoring >= ALERT_SCORE
    out_of_order: int = 0  # rows whose time repeats or goes back (scored, not learnt)
    first_out_of_order_line: int | None = None
    problems: RowProblems = field(default_factory=RowProblems)
    seconds: float = 0.0
    plot: str | None = None

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        parts = [f"{self.path}: {self.rows} rows, {self.alerts} alerts (score >= {ALERT_SCORE})"]
        if self.out_of_order:
            parts.append(f"{self.out_of_order} rows out of order or repeated (first at line "
                         f"{self.first_out_of_order_line}; scored, not learnt)")  # fmt: skip
        if self.problems.counts:
            parts.append(self.problems.describe())
        parts.append(f"{self.seconds:.2f} s")
        return ", ".join(parts)


def _read(in_path: os.PathLike[str] | str, problems: RowProblems
          ) -> tuple[list[str], list[str], np.ndarray, np.ndarray, list[int]]:  # fmt: skip
    stamps: list[str] = []
    raw: list[str] = []
    ts: list[float] = []
    vals: list[float] = []
    lines: list[int] = []
    with csv_rows(in_path) as reader:
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ReplayInputError(
                f"{in_path}: expected header 'timestamp,value', found {header!r}; a NAB data "
                "file starts with that line"
            )
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            stamp = row[0] if row else ""
            text = row[1] if len(row) > 1 else ""
            t = parse_time(stamp)
            if not np.isfinite(t):
                problems.add("bad timestamps (row scored with the previous score)", line)
            v = parse_float(text)
            if v is None:
                problems.add("bad values (scored as missing)", line)
                v = float("nan")
            elif len(row) < 2:
                problems.add("short rows (value missing)", line)
            stamps.append(stamp)
            raw.append(text)
            ts.append(t)
            vals.append(v)
            lines.append(line)
    return stamps, raw, np.array(ts, dtype=np.float64), np.array(vals, dtype=np.float64), lines


def replay_nab_csv(
    in_path: os.PathLike[str] | str,
    out_path: os.PathLike[str] | str,
    *,
    plot: os.PathLike[str] | str | None = None,
    progress: Progress | None = None,
) -> NabReplaySummary:
    """Score one NAB file causally; writes ``timestamp,value,anomaly_score`` (score in [0, 1])
    for every input row and returns what it saw; ``plot``: also write a PNG of the series with
    its scores."""
    t0 = time.perf_counter()
    summary = NabReplaySummary(path=str(in_path))
    stamps, raw, ts, values, lines = _read(in_path, summary.problems)
    n = len(stamps)
    engine = Engine(("value",))
    combined = np.empty(n)
    flags = np.empty(n, dtype=np.uint8)
    for a in range(0, n, CHUNK_ROWS):
        b = min(n, a + CHUNK_ROWS)
        out = engine.process(ts[a:b], values[a:b].reshape(-1, 1))
        combined[a:b], flags[a:b] = out.combined, out.flags
        if progress is not None and n > CHUNK_ROWS:
            progress(f"scored {b:,} of {n:,} rows")
    order = ((flags & FLAG_ORDER) != 0) & np.isfinite(ts)
    summary.rows = n
    summary.alerts = int(np.count_nonzero(combined >= ALERT_SCORE))
    summary.out_of_order = int(np.count_nonzero(order))
    if summary.out_of_order:
        summary.first_out_of_order_line = lines[int(np.argmax(order))]
    with open(out_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for s, v, c in zip(stamps, raw, combined, strict=True):
            w.writerow([s, v, repr(float(c))])
    if plot is not None:
        from device.replay.plots import plot_nab

        plot_nab(Path(plot), ts, values, combined, flags, ALERT_SCORE, Path(in_path).name)
        summary.plot = str(plot)
    summary.seconds = time.perf_counter() - t0
    logger.info("replay.nab_done", extra={"path": str(in_path), "rows": n,
                                          "out_of_order": summary.out_of_order})  # fmt: skip
    return summary
