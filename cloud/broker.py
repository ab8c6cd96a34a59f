"""An embedded MQTT broker (amqtt, in-process) for the zero-setup demo only.

Production, tests and CI use Mosquitto. amqtt speaks MQTT 3.1.1 and has no shared
subscriptions, so the demo runs its clients with protocol 3.1.1 and a plain subscription.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._thread = threading.Thread(target=self._run, name="amqtt", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        from amqtt.broker import Broker

        cfg = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}}
        self._broker = Broker(cfg, loop=self._loop)
        await self._broker.start()

    def start(self) -> EmbeddedBroker:
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None:
            raise RuntimeError(f"embedded broker failed to start on port {self.port}: {self._error}")
        return self

    def stop(self) -> None:
        if self._broker is not None:
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(10)
            except Exception as exc:  # shutting down anyway
                logger.warning("broker.shutdown_error", extra={"reason": str(exc)})
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
