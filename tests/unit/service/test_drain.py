"""The drainer: readiness flips on shutdown, open runs get the grace period, then a stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest

from chat.service.drain import Drainer

pytestmark = pytest.mark.anyio


async def test_drainer_when_exiting_then_runs_stopped_after_grace() -> None:
    exiting = asyncio.Event()
    stopped: list[str] = []
    drainer = Drainer(grace_s=0.05, poll_s=0.01, is_exiting=exiting.is_set)
    drainer.register(stopped.append)
    watcher = asyncio.create_task(drainer.watch())
    await asyncio.sleep(0.03)
    assert not drainer.draining and stopped == []
    exiting.set()
    await asyncio.wait_for(watcher, 2)
    assert drainer.draining
    assert stopped == ["shutting_down"]


async def test_drainer_when_runs_finish_within_grace_then_nothing_stopped() -> None:
    stopped: list[str] = []
    drainer = Drainer(grace_s=5, poll_s=0.01, is_exiting=lambda: True)
    drainer.register(stopped.append)
    watcher = asyncio.create_task(drainer.watch())
    await asyncio.sleep(0.03)
    drainer.unregister(stopped.append)
    await asyncio.wait_for(watcher, 2)
    assert stopped == []
    assert drainer.open_streams == 0


async def wait_until(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    """Poll a condition on the loop (bounded)."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_sigterm_when_deferred_then_draining_first_and_uvicorn_told_after_grace() -> None:
    told: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: told.append(signum))
    stopped: list[str] = []
    drainer = Drainer(grace_s=0.2, poll_s=0.01, settle_s=0.05, is_exiting=lambda: False)
    restore = drainer.defer_sigterm()
    try:
        drainer.register(stopped.append)
        watcher = asyncio.create_task(drainer.watch())
        signal.raise_signal(signal.SIGTERM)
        await wait_until(lambda: drainer.draining)
        assert told == [] and stopped == []  # readiness is 503 now; uvicorn still serves
        await asyncio.wait_for(watcher, 2)
        assert stopped == ["shutting_down"]
        assert told == [signal.SIGTERM]
    finally:
        restore()
        signal.signal(signal.SIGTERM, original)


async def test_sigterm_when_sent_twice_then_passed_on_at_once() -> None:
    told: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: told.append(signum))
    drainer = Drainer(grace_s=30, poll_s=0.01, is_exiting=lambda: False)
    restore = drainer.defer_sigterm()
    try:
        drainer.register(lambda code: None)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        assert told == [signal.SIGTERM]
        await wait_until(lambda: drainer.draining)
    finally:
        restore()
        signal.signal(signal.SIGTERM, original)
    assert signal.getsignal(signal.SIGTERM) is original
