"""An in-process cloud aggregator serving on a thread, for tests that need a real one."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from brokers import MosquittoBroker

from cloud.aggregator.service import AggregatorService
from cloud.config import CloudConfig
from cloud.notifiers import Notifier
from cloud.run import build


@contextlib.contextmanager
def serving(cfg: CloudConfig, broker: MosquittoBroker, notifiers: list[Notifier] | None = None,
            drain: bool = True) -> Iterator[AggregatorService]:
    """``edgeloop cloud`` built from ``cfg``, connected to ``broker``, serving until the block ends
    (then drained, when ``drain``, and stopped)."""
    svc = build(cfg, notifiers=[] if notifiers is None else notifiers)
    svc.start()
    assert svc.connected.wait(10), broker.log_tail()
    stop = threading.Event()
    worker = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    worker.start()
    try:
        yield svc
    finally:
        stop.set()
        worker.join(10)
        if drain:
            svc.drain()
        svc.stop()
