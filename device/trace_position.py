"""How far a trace got: where a restarted agent reads on, and what it does not queue again.

The agent saves, with its engine, the stream offset where the frames not yet in a closed window
begin, keyed by the trace's identity (``trace``: key and pos). Every record a window makes
carries that window's time as the outbox mark ``emitted_until``. Restarted on the same trace,
the agent seeks to the saved offset and reads the open minute again; the records of windows up to
the watermark were queued before the crash and are not queued again (``replayed_not_resent``).
Another trace, or a serial device, starts at its beginning.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from device.outbox import Outbox
from device.reader import ByteSource, TraceSource
from shared.frames import FrameDecoder

logger = logging.getLogger(__name__)


class TracePosition:
    """The trace's key, the resume offset and the replay watermark (see the module doc)."""

    def __init__(self, outbox: Outbox, counts: Counter[str], device_id: str) -> None:
        self.outbox = outbox
        self.counts = counts
        self.device_id = device_id
        self.key: str | None = None  # the trace being read (None: not a trace)
        self.open_from = 0  # where the frames not yet in a closed window begin
        self.window_ts: float | None = None  # the window being processed
        self.replay_until: float | None = None  # a resumed trace's watermark

    def resume(self, source: ByteSource, decoder: FrameDecoder) -> None:
        """A trace read before continues where it got to; another trace starts at its beginning."""
        if not isinstance(source, TraceSource):
            return
        self.key = source.key()
        try:
            saved = json.loads(self.outbox.get("trace") or b"{}")
            pos = int(saved["pos"]) if saved.get("key") == self.key else 0
        except (ValueError, KeyError, TypeError):
            pos = 0
        if not 0 < pos <= source.size:
            return
        source.seek(pos)
        decoder.offset = self.open_from = pos
        mark = self.outbox.get("emitted_until")
        self.replay_until = float(mark.decode()) if mark else None
        self.counts["trace_resumed"] += 1
        logger.info("agent.trace_resumed", extra={"device_id": self.device_id, "position": pos,
                                                  "of": source.size, "replay_until": self.replay_until})

    def state(self, held: int | None) -> bytes | None:
        """The saved position: before the first frame the sensor clock still holds (``held``, its
        offset), if any; None when no trace is read."""
        if self.key is None:
            return None
        pos = self.open_from if held is None else min(self.open_from, held)
        return json.dumps({"key": self.key, "pos": pos}).encode()

    def replayed(self) -> bool:
        """The window being processed is one a resumed trace queued before (up to the watermark)."""
        return self.window_ts is not None and self.replay_until is not None and self.window_ts <= self.replay_until

    def marks(self) -> dict[str, bytes] | None:
        """The watermark a window's record carries (None outside a window)."""
        return None if self.window_ts is None else {"emitted_until": repr(self.window_ts).encode()}
