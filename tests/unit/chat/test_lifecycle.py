"""The drainer: readiness flips on shutdown, open runs get the grace period, then a stop."""

from __future__ import annotations

import asyncio

import pytest

from chat.lifecycle import Drainer

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
