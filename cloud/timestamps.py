"""Which timestamps the cloud believes, and how it shows the ones it stored before it checked.

At ingest a record's timestamps (the record's ``ts`` and its body's ``ts`` / ``*_ts`` fields) must
be finite, from 2000-01-01 on, and no later than one day past the cloud's wall clock
(``implausible``); a record that is not is refused alone. Rows stored before that check may hold
anything (year 3000, 1e300): readers skip or show them with ``readable`` / ``format_utc`` and warn,
never crash.
"""

from __future__ import annotations

import math
import time
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any

EARLIEST = 946_684_800.0  # 2000-01-01T00:00:00Z: nothing this system records is older
LATEST_READABLE = 4_102_444_800.0  # 2100-01-01T00:00:00Z: stored rows later than this are not shown
FUTURE_SLACK_S = 86_400.0  # a device clock may run ahead of the cloud's by up to a day
ABSOLUTE_MAX = 1e12  # whatever the clocks say (epoch milliseconds sent as seconds, 1e300)


def implausible(ts: Any, now: float | None = None, name: str = "ts") -> str | None:
    """Why ``ts`` cannot be a real time for a record received at ``now`` (wall clock), or None."""
    now = time.time() if now is None else now
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return f"{name}: expected epoch seconds, found {type(ts).__name__}"
    if not math.isfinite(ts) or ts > ABSOLUTE_MAX:
        return f"{name}: {ts:.6g} is not a time (epoch seconds are about 1.7e9): fix the device's clock"
    if ts < EARLIEST:
        return (f"{name}: {ts:.6g} is before 2000-01-01: the device's clock is not set (set it from NTP "
                "or GPS before recording)")
    if ts > now + FUTURE_SLACK_S:
        return (f"{name}: {ts:.6g} is {(ts - now) / 86400:.3g} days after the cloud's clock (more than "
                f"{FUTURE_SLACK_S / 86400:g} allowed): fix the device's clock")
    return None


def record_times(rec_ts: float, body: Any) -> list[tuple[str, Any]]:
    """A record's timestamps: its ``ts`` and its body's top-level ``ts`` and ``*_ts`` fields."""
    out: list[tuple[str, Any]] = [("ts", rec_ts)]
    if is_dataclass(body) and not isinstance(body, type):
        for name in _time_fields(type(body)):
            v = getattr(body, name)
            if isinstance(v, int | float) and not isinstance(v, bool):
                out.append((f"body.{name}", v))
    return out


@cache
def _time_fields(cls: type) -> tuple[str, ...]:
    """A record body type's ``ts`` and ``*_ts`` fields (read once per type: this runs per record)."""
    return tuple(f.name for f in fields(cls) if f.name == "ts" or f.name.endswith("_ts"))


def check_record(rec_ts: float, body: Any, now: float | None = None) -> str | None:
    """The first implausible timestamp of a record, as a reason; None when all are plausible."""
    now = time.time() if now is None else now
    for name, ts in record_times(rec_ts, body):
        reason = implausible(ts, now, name)
        if reason is not None:
            return reason
    return None


def readable(ts: Any) -> bool:
    """A stored timestamp a report can use: finite, 1970 .. 2100 (replays and tests store old
    times; only absurd ones are left out)."""
    return (isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts)
            and 0.0 <= ts < LATEST_READABLE)


def format_utc(ts: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """``ts`` as UTC text, or ``?(<value>)`` when it is not a readable time."""
    if not readable(ts):
        return f"?({ts!r:.12})"
    return time.strftime(fmt, time.gmtime(float(ts)))
