"""What an agent keeps across a restart, in its outbox's key-value table.

:meth:`AgentState.save` writes in one transaction the engine (and the metrics it scores), the
sensor clock's timeline, a collar's night watch, the profile's learnt state (a camera's class
rates), how far a trace got and the individual's name; a full disk keeps them in memory until a
later save fits. The last accepted command's position is saved on its own, before the command
runs. A saved part that does not read is logged and counted, and that part starts afresh.

The outbox itself lives in the agent's state dir (:func:`open_outbox`). One the full disk kept
closed at start is tried again every ``retry_s``
(:meth:`AgentState.opened_late`); the agent then restores what it kept.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

from device.commands import Position
from device.config import AgentConfig
from device.detect.engine import Engine
from device.detect.nightwatch import NightWatch, NightWatchStateError
from device.errors import CommandError, SetupError
from device.outbox import DiskFullError, Outbox
from device.profiles import DeviceProfile

logger = logging.getLogger(__name__)
OUTBOX_RETRY_S = 10.0  # an outbox the full disk kept closed at start: try to open it this often


def open_outbox(cfg: AgentConfig) -> Outbox:
    """The outbox in the agent's state dir (created, or a :class:`SetupError` naming it); a full
    disk may keep it closed: the agent scores all the same and opens it later."""
    state_dir = Path(cfg.state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SetupError(f"state dir {state_dir}: cannot create it ({exc.strerror}): pass a writable "
                         "folder as --state-dir (state_dir)") from None
    ob = cfg.outbox
    return Outbox(ob.path or state_dir / "outbox.db", ob.max_bytes, ob.resend_after, ob.raw_ttl)


class AgentState:
    """Reads and writes the agent's saved state (see the module doc)."""

    def __init__(self, outbox: Outbox, counts: Counter[str], device_id: str) -> None:
        self.outbox = outbox
        self.counts = counts
        self.device_id = device_id
        self.retry_s = OUTBOX_RETRY_S
        self._tried = time.monotonic()

    # ---- restore -------------------------------------------------------------------------------
    def engine(self, profile: DeviceProfile) -> Engine:
        """The saved engine on the profile's metrics, else a new one."""
        m, d = profile.metrics, profile.directions
        blob = self.outbox.get("engine_state")
        names = self.outbox.get("engine_metrics")
        if blob:
            try:
                saved = tuple(json.loads(names)) if names else None
                eng = Engine.from_state(blob, m, directions=d, saved_metrics=saved)
                self.counts["engine_restored"] += 1
                return eng
            except ValueError as exc:
                logger.warning("agent.state_unreadable", extra={"reason": str(exc)})
                self.counts["engine_state_unreadable"] += 1
        return Engine(m, directions=d)

    def restore_profile(self, profile: DeviceProfile) -> None:
        """The profile's own learnt state (a camera's class rates), saved with the engine."""
        blob = self.outbox.get("profile_state")
        if not blob:
            return
        try:
            saved = json.loads(blob)
            if saved.get("kind") == profile.kind:
                profile.restore(saved["state"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("agent.state_unreadable", extra={"reason": f"profile state: {exc}"})
            self.counts["profile_state_unreadable"] += 1

    def watch(self) -> NightWatch:
        """A collar's saved night watch, else a new one."""
        blob = self.outbox.get("nightwatch_state")
        if blob:
            try:
                return NightWatch.from_state(blob)
            except NightWatchStateError as exc:
                logger.warning("agent.state_unreadable", extra={"reason": str(exc)})
                self.counts["nightwatch_state_unreadable"] += 1
        return NightWatch()

    def individual_id(self) -> str:
        """The individual's name learnt before a restart ('' if none)."""
        return (self.outbox.get("individual_id") or b"").decode()

    # ---- save ------------------------------------------------------------------------------------
    def save(self, engine: Engine, clock: bytes, watch: NightWatch | None, profile: DeviceProfile,
             trace: bytes | None, individual_id: str) -> None:
        """All of it in one transaction; a full disk is counted and logged, not raised."""
        state = {"engine_state": engine.state(),
                 "engine_metrics": json.dumps(list(engine.metrics)).encode(),
                 "clock": clock}
        if watch is not None:
            state["nightwatch_state"] = watch.state()
        profile_state = profile.state()
        if profile_state is not None:
            state["profile_state"] = json.dumps({"kind": profile.kind, "state": profile_state}).encode()
        if trace is not None:
            state["trace"] = trace
        if individual_id:
            state["individual_id"] = individual_id.encode()
        try:
            self.outbox.put_many(state)
        except DiskFullError as exc:  # kept in memory: saved at the next attempt that fits
            self.counts["state_unsaved"] += 1
            logger.error("agent.state_unsaved", extra={"device_id": self.device_id, "reason": str(exc)})

    # ---- the command position ---------------------------------------------------------------------
    def load_position(self) -> Position:
        """The last accepted command's (epoch, counter) (an agent before command v2 saved the
        counter alone)."""
        v = self.outbox.get("command_counter")
        if not v:
            return Position()
        try:
            d = json.loads(v)
            return Position(int(d["epoch"]), int(d["counter"])) if isinstance(d, dict) else Position(0, int(d))
        except (ValueError, KeyError, TypeError):
            logger.error("commands.position_unreadable", extra={"value": v})
            return Position(0, 2**62)  # refuse until the cloud re-syncs, rather than accept replays

    def save_position(self, pos: Position) -> None:
        try:
            self.outbox.put("command_counter", json.dumps({"epoch": pos.epoch, "counter": pos.counter}).encode())
        except DiskFullError as exc:  # an unsaved position would let the command be replayed
            raise CommandError(f"cannot save the command counter ({exc}): command refused") from None

    # ---- an outbox opened late ------------------------------------------------------------------
    def opened_late(self) -> bool:
        """True once, when an outbox the disk kept closed opens (tried every ``retry_s``)."""
        if self.outbox.available or time.monotonic() - self._tried < self.retry_s:
            return False
        self._tried = time.monotonic()
        if not self.outbox.try_open():
            return False
        self.counts["outbox_opened_late"] += 1
        return True
