"""What the replays share: the input error, progress reporting, reading timestamps row by row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Progress = Callable[[str], None]  # receives short progress messages (the CLI prints them)


class ReplayInputError(ValueError):
    """A replay input file does not have the expected format."""


@dataclass
class RowProblems:
    """Rows a reader could not use, counted by kind, with the first few line numbers each."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, kind: str, line: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        first = self.lines.setdefault(kind, [])
        if len(first) < 3:
            first.append(line)

    def describe(self) -> str:
        """``"2 bad values (lines 5, 9)"``, ... or an empty string."""
        return ", ".join(
            f"{n} {kind} (line{'s' if len(self.lines[kind]) > 1 else ''} "
            f"{', '.join(map(str, self.lines[kind]))}{', ...' if n > len(self.lines[kind]) else ''})"
            for kind, n in self.counts.items()
        )


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO timestamp (``2014-04-01 00:00:00``); NaN when it is not one."""
    try:
        d = np.datetime64(text.strip().replace(" ", "T"), "ns")
    except (ValueError, TypeError, OverflowError):
        return float("nan")
    return float("nan") if np.isnat(d) else float(d.astype(np.int64)) / 1e9


def parse_float(text: str) -> float | None:
    """The number in ``text``; NaN for an empty field; None when it is not a number."""
    t = text.strip()
    if not t:
        return float("nan")
    try:
        return float(t)
    except ValueError:
        return None
