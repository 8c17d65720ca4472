"""Graceful shutdown: notice SIGTERM, report not-ready, and end open streams with a farewell.

uvicorn closes its listening socket the moment it sees SIGTERM, then waits for open connections;
long streams would hold it for minutes, and nobody could ask ``/readyz`` any more (a probe's
connection is refused or never accepted). So the drainer takes SIGTERM first: ``/readyz`` and
new requests answer 503 ``shutting_down`` while running answers get ``grace_s`` to finish; the
rest are stopped, so each stream still ends with its one terminal ``error`` event
(``shutting_down``); only then is the signal passed on to uvicorn. A second SIGTERM passes on
at once. Other exits (SIGINT) are noticed by polling uvicorn and drained the same way.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
from collections.abc import Callable
from types import FrameType

import structlog

from chat.seams import uvicorn_is_exiting, uvicorn_sigterm_handler

log = structlog.get_logger(__name__)

StopRun = Callable[[str], None]


class Drainer:
    """Tracks running streams and stops them when the process is shutting down."""

    def __init__(
        self,
        *,
        grace_s: float,
        poll_s: float = 0.2,
        settle_s: float = 1.0,
        is_exiting: Callable[[], bool] = uvicorn_is_exiting,
    ) -> None:
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.settle_s = settle_s
        self._is_exiting = is_exiting
        self._runs: set[StopRun] = set()
        self.draining = False
        self._sigterm_seen = False
        self._on_drained: Callable[[], None] | None = None

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

    def defer_sigterm(self) -> Callable[[], None]:
        """Take SIGTERM from uvicorn: drain first, then hand it the signal. Returns an undo.

        Call it on the running loop after uvicorn installed its handler (in the lifespan).
        Without a Python-level handler to defer (not the main thread, not uvicorn) it does
        nothing, and shutdown is noticed by polling as before.
        """
        previous = uvicorn_sigterm_handler()
        if threading.current_thread() is not threading.main_thread() or previous is None:
            return _nothing
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self._sigterm_seen:
                previous(signum, frame)  # asked twice: stop waiting for the drain
                return
            self._sigterm_seen = True
            self._on_drained = functools.partial(previous, signum, frame)
            loop.call_soon_threadsafe(self.begin)

        signal.signal(signal.SIGTERM, on_sigterm)

        def restore() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        return restore

    async def watch(self) -> None:
        """Wait for shutdown; then wait the grace period and stop what is still running."""
        # uvicorn offers no shutdown event to await, only a flag: poll it, as sse-starlette does.
        while not self.draining and not self._is_exiting():  # noqa: ASYNC110
            await asyncio.sleep(self.poll_s)
        self.begin()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        while self._runs and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(self.poll_s, max(deadline - loop.time(), 0)))
        stopped = self.stop_all()
        if stopped:
            log.info("drain_stopped_streams", stopped=stopped)
        on_drained, self._on_drained = self._on_drained, None
        if on_drained is None:
            return
        # Let the stopped runs write their farewell before uvicorn starts closing connections.
        settled = loop.time() + self.settle_s
        while self._runs and loop.time() < settled:  # noqa: ASYNC110
            await asyncio.sleep(min(self.poll_s, max(settled - loop.time(), 0)))
        log.info("drained", open_streams=len(self._runs))
        on_drained()


def _nothing() -> None:
    return None
