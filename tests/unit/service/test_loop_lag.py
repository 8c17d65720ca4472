"""The loop-lag sampler: a blocked loop shows as lag, and a failing callback does not stop it."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat.service.adaptive_limit import LoopSample
from chat.service.loop_lag import sample_loop_lag

pytestmark = pytest.mark.anyio


async def test_sampler_when_loop_blocked_then_window_reports_at_least_the_block() -> None:
    windows: list[LoopSample] = []
    enough = asyncio.Event()

    def on_window(sample: LoopSample) -> None:
        windows.append(sample)
        if len(windows) >= 3:
            enough.set()

    sampler = asyncio.create_task(sample_loop_lag(on_window, interval_s=0.005, window_s=0.02))
    try:
        for _ in range(200):  # bounded: each turn blocks the loop 30 ms, as a CPU-bound backlog
            time.sleep(0.03)  # noqa: ASYNC251 (blocking the loop is the point)
            await asyncio.sleep(0)
            if enough.is_set():
                break
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    assert len(windows) >= 3
    # A timer cannot fire while the loop is blocked: late windows hold most of the 30 ms block.
    assert max(w.lag_s for w in windows) >= 0.015
    assert all(0.0 <= w.busy <= 1.0 for w in windows)


async def test_sampler_when_callback_raises_then_keeps_sampling() -> None:
    calls = 0
    enough = asyncio.Event()

    def on_window(sample: LoopSample) -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            enough.set()
        raise RuntimeError("broken")

    sampler = asyncio.create_task(sample_loop_lag(on_window, interval_s=0.001, window_s=0.002))
    try:
        await asyncio.wait_for(enough.wait(), timeout=5)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    assert calls >= 3
