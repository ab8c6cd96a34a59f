"""What the replays share: the input error, progress reporting, reading timestamps row by row."""

from __future__ import annotations

import contextlib
import csv
import lzma
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import InputError

Progress = Callable[[str], None]  # receives short progress messages (the CLI prints them)


class ReplayInputError(ValueError, InputError):
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
    """The number in ``text``; NaN for an empty field; None when it is not a (finite) number."""
    t = text.strip()
    if not t:
        return float("nan")
    try:
        v = float(t)
    except ValueError:
        return None
    return None if math.isinf(v) else v


@contextlib.contextmanager
def csv_rows(path: os.PathLike[str] | str) -> Iterator[Any]:
    """A csv reader over a plain or ``.xz`` text file. Bytes that are not UTF-8 become U+FFFD (the
    row is then garbage, which the caller counts with its line number); a truncated or corrupt
    ``.xz``, or a row csv cannot split, is a :class:`ReplayInputError` naming the file and line."""
    xz = str(path).endswith(".xz")
    with (lzma.open(path, "rt", newline="", errors="replace") if xz
          else open(path, newline="", errors="replace")) as fh:
        reader = csv.reader(fh)
        try:
            with warnings.catch_warnings():  # numpy on "...+01:00": it converts to UTC, as we want
                warnings.filterwarnings("ignore", "no explicit representation of timezones", UserWarning)
                yield reader
        except (EOFError, lzma.LZMAError) as exc:
            if os.path.getsize(path) == 0:
                raise ReplayInputError(f"{path}: the file is empty (0 bytes), not .xz data; fetch it "
                                       "again") from None
            where = f"after line {reader.line_num}" if reader.line_num else "before its first line"
            raise ReplayInputError(f"{path}: the .xz data is truncated or corrupt {where} ({exc}); check "
                                   f"it with `xz -t {path}` and fetch the file again") from None
        except csv.Error as exc:
            raise ReplayInputError(f"{path}, line {reader.line_num}: {exc}; fix or delete that row") from None
