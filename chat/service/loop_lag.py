"""Event-loop lag: how late a periodic timer fires, handed on once per window.

The I/O half of the adaptive limit (the arithmetic is in ``adaptive_limit.py``). One task
per process, started in the app's lifespan: it sleeps ``interval_s``, notes how much later than
asked it woke, and every ``window_s`` passes the window's lag, with the share of the window the
loop's thread spent on a CPU, to ``on_window``. About a hundred wake-ups a second, a few
microseconds each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

from chat.service.adaptive_limit import LoopSample, window_lag

log = structlog.get_logger(__name__)

INTERVAL_S: Final = 0.010
WINDOW_S: Final = 0.100

# The lifespan's hook: given the callback for each window's lag, run until cancelled. Tests pass
# their own to script the lag.
LagSampler = Callable[[Callable[[LoopSample], object]], Awaitable[None]]


async def sample_loop_lag(
    on_window: Callable[[LoopSample], object],
    *,
    interval_s: float = INTERVAL_S,
    window_s: float = WINDOW_S,
) -> None:
    """Measure the loop's timer lag until cancelled; call ``on_window(sample)`` each window."""
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    window_start = loop.time()
    # CPU time of this thread (the loop's) against wall time: is the lag our own work?
    cpu_start, wall_start = time.thread_time(), time.perf_counter()
    failed = False
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        now = loop.time()
        samples.append(max(0.0, now - due))
        if now - window_start < window_s:
            continue
        cpu, wall = time.thread_time(), time.perf_counter()
        busy = (cpu - cpu_start) / (wall - wall_start) if wall > wall_start else 1.0
        sample = LoopSample(window_lag(samples), min(1.0, busy))
        samples.clear()
        window_start = now
        cpu_start, wall_start = cpu, wall
        try:
            on_window(sample)
        except Exception:
            # The limit stays where it is; say so once rather than every window.
            if not failed:
                log.exception("adaptive_limit_failed")
            failed = True
