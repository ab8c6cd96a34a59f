"""A fault-injecting TCP proxy for tests: clients connect to the proxy, the proxy to the broker.

Modes (switch at any time, from any thread):

- ``pass_through()``: forward both ways (optionally with ``delay(seconds)`` per chunk);
- ``blackhole()``: half-open link. Connections stay open and new ones are accepted, but nothing
  is forwarded in either direction and no close is propagated: only keepalives can notice;
- ``refuse()``: new connections are closed at once (the network is down);
- ``cut()``: abort every open connection now (RST), keeping the current mode for new ones.

``stats`` counts bytes each way, connections accepted / active, cuts. Runs an asyncio loop in a
daemon thread; ``stop()`` closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client
    accepted: int = 0
    active: int = 0
    refused: int = 0
    cuts: int = 0
    held_chunks: int = 0  # chunks read while blackholed, never forwarded

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """See the module docstring. ``FaultProxy(target_port).start()``; ``proxy.port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1",
                 listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = listen_host
        self._listen_port = listen_port
        self.port = 0
        self.mode = "pass"
        self.delay_s = 0.0
        self.stats = ProxyStats()
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy",
                                        daemon=True)
        self._server: asyncio.AbstractServer | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._listen_port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:  # connection handlers still holding a blackholed link
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    # ---- controls --------------------------------------------------------------------------
    def pass_through(self) -> None:
        self.mode = "pass"

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def refuse(self) -> None:
        self.mode = "refuse"

    def delay(self, seconds: float) -> None:
        """Forward each chunk `seconds` late (pass mode)."""
        self.delay_s = max(0.0, seconds)
        self.mode = "pass"

    def cut(self) -> int:
        """Abort every open connection (both sides); returns how many were cut."""
        fut = asyncio.run_coroutine_threadsafe(self._cut(), self._loop)
        return fut.result(10)

    async def _cut(self) -> int:
        n = len(self._conns)
        self._abort_all()
        self.stats.cuts += 1
        return n

    def outage(self, seconds: float, how: str = "refuse") -> None:
        """Cut everything, stay down (`refuse` or `blackhole`) for `seconds`, then pass again."""
        getattr(self, how)()
        self.cut()
        time.sleep(seconds)
        self.pass_through()

    def active(self) -> int:
        return len(self._conns)

    # ---- plumbing --------------------------------------------------------------------------
    def _abort_all(self) -> None:
        for conn in list(self._conns):
            self._abort(conn)

    def _abort(self, conn: _Conn) -> None:
        for w in (conn.client, conn.upstream):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()
        for t in conn.tasks:
            t.cancel()
        if conn in self._conns:
            self._conns.discard(conn)
            self.stats.active = len(self._conns)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        self.stats.active = len(self._conns)
        try:
            # a blackholed link never reaches the target: hold until the mode changes
            while self.mode == "blackhole":
                await asyncio.sleep(0.05)
            if self.mode == "refuse":
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):
            self._abort(conn)
            return
        conn.upstream = up_writer
        t1 = asyncio.ensure_future(self._pump(conn, reader, up_writer, "up"))
        t2 = asyncio.ensure_future(self._pump(conn, up_reader, writer, "down"))
        conn.tasks += [t1, t2]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
        self._abort(conn)

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    direction: str) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    # EOF from one side: in a half-open link nobody would hear about it
                    while self.mode == "blackhole":
                        await asyncio.sleep(0.05)
                    return
                if self.mode == "blackhole":
                    self.stats.held_chunks += 1
                    while self.mode == "blackhole":  # hold: no further reads, no forwarding
                        await asyncio.sleep(0.05)
                    return  # the link "comes back" broken: the held chunk is gone, close
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                dst.write(data)
                await dst.drain()
                if direction == "up":
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
        except (OSError, asyncio.IncompleteReadError):
            return
