"""Graceful shutdown: notice SIGTERM, report not-ready, and end open streams with a farewell.

uvicorn stops accepting connections on SIGTERM and then waits for open ones; long streams would
hold it for minutes. The drainer gives running answers ``grace_s`` to finish, then stops the
rest so each stream still ends with its one terminal ``error`` event (``shutting_down``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from chat.seams import uvicorn_is_exiting

log = structlog.get_logger(__name__)

StopRun = Callable[[str], None]


class Drainer:
    """Tracks running streams and stops them when the process is shutting down."""

    def __init__(
        self,
        *,
        grace_s: float,
        poll_s: float = 0.2,
        is_exiting: Callable[[], bool] = uvicorn_is_exiting,
    ) -> None:
        self.grace_s = grace_s
        self.poll_s = poll_s
        self._is_exiting = is_exiting
        self._runs: set[StopRun] = set()
        self.draining = False

    @property
    def open_streams(self) -> int:
        """Streams running now."""
        return len(self._runs)

    def register(self, stop: StopRun) -> None:
        """Track a run; ``stop(code)`` ends it with that error code."""
        self._runs.add(stop)

    def unregister(self, stop: StopRun) -> None:
        """Forget a run that ended."""
        self._runs.discard(stop)

    def begin(self) -> None:
        """Stop admitting new streams (readiness turns 503)."""
        if not self.draining:
            self.draining = True
            log.info("draining", open_streams=len(self._runs), grace_s=self.grace_s)

    def stop_all(self, code: str = "shutting_down") -> int:
        """End every running stream now; returns how many were stopped."""
        runs = list(self._runs)
        for stop in runs:
            stop(code)
        return len(runs)

    async def watch(self) -> None:
        """Poll for shutdown; then wait the grace period and stop what is still running."""
        # uvicorn offers no shutdown event to await, only a flag: poll it, as sse-starlette does.
        while not self._is_exiting():  # noqa: ASYNC110
            await asyncio.sleep(self.poll_s)
        self.begin()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        while self._runs and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(self.poll_s, max(deadline - loop.time(), 0)))
        stopped = self.stop_all()
        if stopped:
            log.info("drain_stopped_streams", stopped=stopped)
