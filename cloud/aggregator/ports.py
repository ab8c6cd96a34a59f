"""The aggregator's collaborators as protocols: what it calls, not which class answers.

A commander signs and sends commands (:class:`cloud.commands.CommandSender`, re-exported here);
a rollout manager (``cloud.releases.RolloutManager``) is ticked with the periodic work and told of
replies and daily summaries. Tests and the fleet simulation pass their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from cloud.commands import CommandSender

if TYPE_CHECKING:
    from cloud.releases.rollout import DeviceAction
    from shared.schemas import Reply

__all__ = ["CommandSender", "Rollouts"]


class Rollouts(Protocol):
    """What the aggregator needs of a rollout manager."""

    def tick(self, now: float) -> Sequence[DeviceAction]:
        """Advance every rollout; the commands to send to devices."""
        ...

    def on_summary(self, device_id: str, body: Mapping[str, Any], now: float) -> None:
        """A device's daily summary (the rollout gates' evidence)."""
        ...

    def handle_reply(self, reply: Reply, now: float) -> bool:
        """A device's reply to a rollout command; True if it was one of a rollout's."""
        ...
