"""Arrivals: chunks grouped by what was ready together, with ``await`` semantics kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from chat.models.openai.arrivals import Arrivals

pytestmark = pytest.mark.anyio


async def bursts(gates: list[asyncio.Event], log: list[str]) -> AsyncGenerator[bytes, None]:
    """b"a", b"b" at once; then b"c", b"d" after the first gate; b"e" after the second."""
    try:
        yield b"a"
        yield b"b"
        await gates[0].wait()
        yield b"c"
        yield b"d"
        await gates[1].wait()
        yield b"e"
    finally:
        await asyncio.sleep(0)  # cleanup that itself awaits
        log.append("closed")


async def test_next_batch_when_chunks_ready_together_then_one_batch_each_burst() -> None:
    gates = [asyncio.Event(), asyncio.Event()]
    log: list[str] = []
    arrivals = Arrivals(bursts(gates, log))
    assert await arrivals.next_batch() == [b"a", b"b"]
    gates[0].set()
    assert await arrivals.next_batch() == [b"c", b"d"]
    gates[1].set()
    assert await arrivals.next_batch() == [b"e"]
    assert await arrivals.next_batch() == []
    assert await arrivals.next_batch() == []
    assert log == ["closed"]


async def test_next_batch_when_pending_read_completes_later_then_resumed_like_await() -> None:
    gates = [asyncio.Event(), asyncio.Event()]
    arrivals = Arrivals(bursts(gates, []))
    await arrivals.next_batch()
    waiter = asyncio.ensure_future(arrivals.next_batch())
    await asyncio.sleep(0)
    assert not waiter.done()  # suspended on the pending read, not spinning
    gates[0].set()
    assert await asyncio.wait_for(waiter, 5) == [b"c", b"d"]
    await arrivals.aclose()  # a read is pending again: only aclose() may end it


async def test_aclose_when_read_pending_then_source_cleanup_runs() -> None:
    gates = [asyncio.Event(), asyncio.Event()]
    log: list[str] = []
    arrivals = Arrivals(bursts(gates, log))
    assert await arrivals.next_batch() == [b"a", b"b"]
    await arrivals.aclose()
    assert log == ["closed"]


async def test_next_batch_when_cancelled_while_waiting_then_cancelled_and_source_cleaned() -> None:
    gates = [asyncio.Event(), asyncio.Event()]
    log: list[str] = []
    arrivals = Arrivals(bursts(gates, log))
    await arrivals.next_batch()
    waiter = asyncio.ensure_future(arrivals.next_batch())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert log == ["closed"]
    await arrivals.aclose()


async def test_next_batch_when_source_fails_after_ready_chunks_then_chunks_first() -> None:
    async def failing() -> AsyncGenerator[bytes, None]:
        yield b"a"
        yield b"b"
        raise ConnectionResetError("peer gone")

    arrivals = Arrivals(failing())
    assert await arrivals.next_batch() == [b"a", b"b"]
    with pytest.raises(ConnectionResetError):
        await arrivals.next_batch()
