"""The rules' view of personalisation: is an event inside a range the owner already accepted?

Rows in ``personalisation`` (written by ``cloud.feedback``) carry, per individual and metric, a
``threshold`` in the metric's own units and a ``direction`` (+1 up, -1 down, 0 both). An event is
*personalised* when every one of its metrics has such a row and ``|observed - baseline|`` is at
most the threshold, so the rules can hold or suppress it with reason "personalised". The
thresholds come with the rules' history (``cloud.rules.history``; the store's repositories read
them), so this module is pure.
"""

from __future__ import annotations

from typing import Protocol


class _EventLike(Protocol):
    @property
    def metrics(self) -> tuple[str, ...]: ...
    @property
    def directions(self) -> tuple[int, ...]: ...
    @property
    def baseline(self) -> tuple[float | None, ...]: ...
    @property
    def observed(self) -> tuple[float | None, ...]: ...


def within_thresholds(th: dict[tuple[str, int], float], ev: _EventLike) -> bool:
    """Is every metric of ``ev`` within the accepted deviation ``th``, (metric, direction) -> the
    widest accepted deviation (``FeedbackRepository.personal_thresholds``)?"""
    if not ev.baseline or not ev.observed or not th:
        return False
    for m, d, b, o in zip(ev.metrics, ev.directions, ev.baseline, ev.observed, strict=False):
        if b is None or o is None:  # a metric without numbers is not known to be in range
            return False
        dev = o - b
        direction = d or (1 if dev > 0 else -1 if dev < 0 else 0)
        limit = max(th.get((m, direction), -1.0), th.get((m, 0), -1.0))
        if limit < 0 or abs(dev) > limit:
            return False
    return True
