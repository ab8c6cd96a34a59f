"""The agent's own commands, beside the release handler's (device/releases.py).

``config`` steers the engine: ``accept_new_normal`` (relearn a metric's baseline from now) or
``widen`` (a metric's band by ``factor``); the event trace starts again after it (earlier
snapshots lack the change) and the state is saved at once. ``collect_more`` asks for raw
windows for ``minutes`` of the device's timeline (at most a day). A bad argument raises
ValueError, which the command handler reports to the cloud (device/commands.py).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from device.clock import Clock
from device.commands import Handler
from device.detect.engine import Engine
from device.trace import TraceRing


class Steered(Protocol):
    """What of the agent the commands change."""

    engine: Engine
    trace: TraceRing | None
    raw_until: float  # raw windows are queued for minutes before this time
    clock: Clock[Any]

    def save_state(self) -> None: ...


class AgentCommands:
    """``config`` and ``collect_more`` on one agent (see the module doc)."""

    def __init__(self, agent: Steered) -> None:
        self.agent = agent

    def handlers(self) -> dict[str, Handler]:
        return {"config": self.config, "collect_more": self.collect_more}

    def config(self, args: dict[str, Any]) -> dict[str, Any]:
        a = self.agent
        action, metric = args.get("action"), args.get("metric")
        if action == "accept_new_normal":
            a.engine.accept_new_normal(metric)
        elif action == "widen":
            a.engine.widen(str(metric), float(args.get("factor", 1.5)))
        else:
            raise ValueError(f"config action {action!r} unknown: use accept_new_normal or widen")
        if a.trace is not None:  # earlier snapshots lack this change: replays start after it
            a.trace.reset()
        a.save_state()
        return {"action": action, "metric": metric}

    def collect_more(self, args: dict[str, Any]) -> dict[str, Any]:
        a = self.agent
        minutes = float(args.get("minutes", 60))
        if not 0 < minutes <= 24 * 60:
            raise ValueError(f"collect_more minutes={minutes} must be in (0, 1440]")
        a.raw_until = max(a.raw_until, (a.clock.last or time.time()) + minutes * 60.0)
        return {"raw_until": a.raw_until}
