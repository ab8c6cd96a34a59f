"""Each individual's data clock: how far its records' time lags the wall clock.

Decisions are stamped with the event's own time (``notified_at`` = the event's ts), owners answer
in wall time. For a live collar the two agree; for alerts replayed from an old trace (or a backlog
uploaded after days offline) they are months or days apart, and comparing them directly sweeps
every replayed alert to "ignored" the moment it is decided. The offset of an individual is
``received_at - ts`` of its newest record: wall time minus the offset is "now" in that
individual's data time, and a wall-clock answer minus the offset lands on the event's time axis.
"""

from __future__ import annotations

from typing import Any

LIVE_SLACK_S = 300.0  # a record this close to its arrival is live: no offset
WALL_SLACK_S = 3600.0  # a time this close to the wall clock is wall time (not a simulation's clock)


def data_clock_offsets(db: Any) -> dict[str, float]:
    """{individual_id: seconds its data runs behind the wall clock} (0 for live individuals)."""
    try:
        rows = db.execute(
            "SELECT r.individual_id, r.received_at - r.ts FROM records r JOIN "
            "(SELECT individual_id, MAX(ts) AS ts FROM records GROUP BY individual_id) m "
            "ON r.individual_id = m.individual_id AND r.ts = m.ts").fetchall()
    except Exception as exc:  # no records table yet
        if "no such table" in str(exc):
            return {}
        raise
    out: dict[str, float] = {}
    for ind, lag in rows:
        lag = float(lag or 0.0)
        out[ind] = max(out.get(ind, 0.0), lag if lag > LIVE_SLACK_S else 0.0)
    return out
