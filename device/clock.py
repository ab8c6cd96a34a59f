"""The agent's timeline from the sensor's clock: one bad timestamp is a glitch, not a jump.

A sensor frame carries the device clock's time. The agent keeps a timeline that never goes back
(``offset`` is added to every frame's time). A frame whose time jumps away from the timeline
(back by more than ``back_s``, or ahead by more than ``ahead_s``) is *held*, not followed: if the
next frames carry on where the timeline was, it was a glitch (a single bad reading, a bit flip):
it is dropped and counted. Only when ``confirm`` frames in a row agree with the jump (each close
to the one before it) is it real: a clock that went back is absorbed into the offset (the timeline
stays monotonic), a jump ahead (a gap, or the clock set forward) is followed; the held frames are
then released in order. The offset and the last time are saved with the agent's state, so a restart
keeps the timeline where it was.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)
F = TypeVar("F")
BACK_S = 60.0  # further back than this: a jump, not jitter
AHEAD_S = 1800.0  # further ahead than this: a gap or a jump
CONFIRM = 3  # frames that must agree before a jump is followed


@dataclass
class Clock(Generic[F]):
    """Maps each frame to its time on the agent's timeline (see the module doc).

    ``admit(t, frame)`` returns the (time, frame) pairs to process now, in order: usually just
    this one; none while a jump waits for confirmation; the held ones once it is confirmed."""

    back_s: float = BACK_S
    ahead_s: float = AHEAD_S
    confirm: int = CONFIRM
    offset: float = 0.0
    last: float | None = None  # the newest time on the timeline
    counts: Counter[str] = field(default_factory=Counter)
    _held: list[tuple[float, F]] = field(default_factory=list)  # device times (offset applied)

    def _jumps(self, t: float, ref: float) -> bool:
        return t < ref - self.back_s or t > ref + self.ahead_s

    def admit(self, device_t: float, frame: F) -> list[tuple[float, F]]:
        t = device_t + self.offset
        if self.last is None:
            self.last = t
            return [(t, frame)]
        if not self._jumps(t, self.last):
            if self._held:  # the timeline carried on: what was held was a glitch
                self.counts["clock_glitch"] += len(self._held)
                logger.warning("ingest.clock_glitch", extra={"frames": len(self._held),
                                                             "offset_s": self._held[0][0] - self.last})
                self._held.clear()
            return [self._on_timeline(t, frame)]
        if self._held and not self._jumps(t, self._held[-1][0]):
            self._held.append((t, frame))  # agrees with the jump so far
            if len(self._held) >= self.confirm:
                return self._follow()
            return []
        if self._held:  # a jump elsewhere: the earlier suspects were glitches
            self.counts["clock_glitch"] += len(self._held)
            self._held.clear()
        self._held.append((t, frame))
        return []

    def _on_timeline(self, t: float, frame: F) -> tuple[float, F]:
        assert self.last is not None
        t = max(t, self.last - self.back_s)  # jitter back within back_s passes through
        self.last = max(self.last, t)
        return t, frame

    def _follow(self) -> list[tuple[float, F]]:
        """The held frames agree: the jump is real."""
        assert self.last is not None
        first = self._held[0][0]
        if first < self.last:  # the clock went back: absorb it, keep the timeline monotonic
            shift = self.last - first
            self.offset += shift
            self.counts["clock_jump_back"] += 1
            held = [(t + shift, f) for t, f in self._held]
            logger.warning("ingest.clock_jump", extra={"direction": "back", "seconds": shift})
        else:  # a gap or a clock set forward: the two look alike from here
            self.counts["gap_or_clock_jump_forward"] += 1
            held = list(self._held)
            logger.info("ingest.clock_jump", extra={"direction": "ahead", "seconds": first - self.last})
        self._held.clear()
        self.last = max(t for t, _ in held)
        return held

    def held_first(self) -> F | None:
        return self._held[0][1] if self._held else None

    def flush(self) -> list[tuple[float, F]]:
        """End of input: frames still waiting for confirmation are dropped (counted)."""
        if self._held:
            self.counts["clock_unconfirmed"] += len(self._held)
            self._held.clear()
        return []

    # ---- state -----------------------------------------------------------------------------
    def state(self) -> bytes:
        return json.dumps({"offset": self.offset, "last": self.last}).encode()

    def restore(self, blob: bytes | None) -> None:
        """Continue a saved timeline; a damaged state is counted and ignored."""
        if not blob:
            return
        try:
            d = json.loads(blob)
            offset, last = float(d["offset"]), d["last"]
            self.offset, self.last = offset, None if last is None else float(last)
        except (ValueError, KeyError, TypeError):
            self.counts["clock_state_unreadable"] += 1
