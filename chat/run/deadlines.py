"""A run's deadlines (first token, idle, total) and the one timer that enforces them."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec


class Deadlines(msgspec.Struct, frozen=True):
    """Seconds allowed until the first token, between tokens, and for the whole run."""

    first_token_s: float = 30.0
    idle_s: float = 30.0
    total_s: float = 300.0


class Watchdog:
    """One timer for a run's moving deadline: moving it is an assignment, not a new timer.

    ``asyncio.timeout_at`` around every wait costs a timer, a context manager and a task lookup
    per token (~4 us here). Here a deadline that moves later only updates a float: the timer
    re-arms when it fires early. A deadline that moves earlier (the idle deadline after the
    first token, when it is shorter than the first-token one) re-arms the timer at once, or it
    would fire late. The timer cancels the consumer's task only while that task waits in
    ``wait()``; a deadline that passes elsewhere fails the next ``wait()`` at once.
    """

    __slots__ = ("_armed_at", "_deadline", "_fired", "_handle", "_loop", "_task", "_waiting")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._waiting = False
        self._fired = False
        self._armed_at = deadline
        self._handle = self._loop.call_at(deadline, self._check)

    @property
    def waiting(self) -> bool:
        """Whether a ``wait()`` is in progress (the timer would cancel it)."""
        return self._waiting

    @property
    def deadline(self) -> float:
        """The loop time at which ``wait()`` gives up."""
        return self._deadline

    @deadline.setter
    def deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if deadline < self._armed_at:
            self._handle.cancel()
            self._arm(deadline)

    def _arm(self, at: float) -> None:
        self._armed_at = at
        self._handle = self._loop.call_at(at, self._check)

    def _check(self) -> None:
        if self._deadline > self._loop.time():
            self._arm(self._deadline)
            return
        # No timer is armed now: any deadline set later arms one.
        self._armed_at = math.inf
        if self._waiting and self._task is not None and not self._fired:
            self._fired = True
            self._task.cancel()

    async def wait(self, awaitable: Any) -> Any:
        """``await awaitable``, or ``TimeoutError`` once the deadline passes."""
        if self._deadline <= self._loop.time():
            raise TimeoutError
        task = self._task = asyncio.current_task()
        self._waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Our own cancel, and nobody else's since: a timeout, as asyncio.timeout reports it.
            if self._fired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def close(self) -> None:
        self._handle.cancel()
