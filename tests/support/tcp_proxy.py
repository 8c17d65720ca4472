"""A tiny TCP proxy for tests: forwards 127.0.0.1:<free port> to a target, drops links on demand.

It runs its own asyncio loop in a thread, so synchronous tests (Playwright's sync API) can use
it. ``drop_all()`` aborts every live connection (RST on both sides), the way a flaky network or
a restarting load balancer would, while the proxy keeps accepting new ones: a client that
reconnects gets through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Final

_CHUNK: Final = 65536


class _Link:
    """One proxied connection: the client side and the upstream side."""

    __slots__ = ("client", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        """Reset both sides at once."""
        self.client.transport.abort()
        self.upstream.transport.abort()


class TcpProxy:
    """Forwards connections to ``target_host:target_port``; every wait is bounded by ``timeout``."""

    def __init__(self, target_host: str, target_port: int, *, timeout: float = 10.0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.timeout = timeout
        self.port = 0
        self.accepted = 0
        self.dropped = 0
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        """Start listening; returns once the port is bound."""
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise TimeoutError(f"tcp proxy did not start within {self.timeout}s")
        if self._error is not None:
            raise RuntimeError("tcp proxy failed to start") from self._error
        return self

    def drop_all(self) -> int:
        """Abort every live connection; returns how many were dropped."""
        loop = self._loop
        if loop is None:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._drop_all(), loop)
        return future.result(self.timeout)

    def live(self) -> int:
        """Connections open right now."""
        loop = self._loop
        if loop is None:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._count(), loop)
        return future.result(self.timeout)

    def close(self) -> None:
        """Stop accepting, drop what is open and join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already stopped
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(self.timeout)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), which is waiting for _ready
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await self._drop_all()
            await server.wait_closed()
            # Handlers still waiting on a connect to the target: end them, not leak them.
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _count(self) -> int:
        return len(self._links)

    async def _drop_all(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        self.dropped += len(links)
        return len(links)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), self.timeout
            )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        clean = False
        try:
            # Both directions end on EOF (half-closes are passed on); an error ends the link.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            clean = all(p.done() and not p.cancelled() and p.exception() is None for p in pipes)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._links.discard(link)
            if clean:
                # close() sends what is still buffered first; abort() would discard it.
                writer.close()
                up_writer.close()
            else:
                link.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF, then half-close the other side."""
    while chunk := await source.read(_CHUNK):
        sink.write(chunk)
        await sink.drain()
    if sink.can_write_eof() and not sink.transport.is_closing():
        sink.write_eof()
