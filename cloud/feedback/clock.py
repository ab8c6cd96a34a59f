"""Each individual's data clock: how far its records' time lags the wall clock.

Decisions are stamped with the event's own time (``notified_at`` = the event's ts), owners answer
in wall time. For a live collar the two agree; for alerts replayed from an old trace (or a backlog
uploaded after days offline) they are months or days apart, and comparing them directly sweeps
every replayed alert to "ignored" the moment it is decided. The offset of an individual is
``received_at - ts`` of its newest record: wall time minus the offset is "now" in that
individual's data time, and a wall-clock answer minus the offset lands on the event's time axis.
"""

from __future__ import annotations

from cloud.store.backend import Backend
from cloud.store.feedback import FeedbackRepository

LIVE_SLACK_S = 300.0  # a record this close to its arrival is live: no offset
WALL_SLACK_S = 3600.0  # a time this close to the wall clock is wall time (not a simulation's clock)


def data_clock_offsets(backend: Backend) -> dict[str, float]:
    """{individual_id: seconds its data runs behind the wall clock} (0 for live individuals)."""
    out: dict[str, float] = {}
    for ind, lag in FeedbackRepository(backend).newest_record_lags():
        lag = float(lag or 0.0)
        out[ind] = max(out.get(ind, 0.0), lag if lag > LIVE_SLACK_S else 0.0)
    return out
