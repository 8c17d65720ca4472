"""uvicorn serving an app object in a background thread, for tests that inspect the server loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn


class ThreadedServer:
    """Serve ``app`` on a free 127.0.0.1 port in a thread with its own event loop."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self._sock]))
        # Library tasks that live as long as the loop (sse-starlette's shutdown watcher).
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def task_count(self) -> int:
        """Tasks alive on the server's loop right now."""
        assert self.loop is not None

        async def count() -> int:
            return len(asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(5)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        for _ in range(200):  # bounded: 10 s
            if self.server.started:
                return self
            self._thread.join(0.05)
        raise AssertionError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()
