"""The SSE response's send timeout: one timer per response, the reader let go when it stalls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from sse_starlette import ServerSentEvent

from chat.http.sse import _EventSourceResponse

SCOPE = {"type": "http", "method": "POST"}


async def never_disconnects() -> Any:
    await anyio.sleep_forever()


def frames(count: int, closed: list[bool]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        try:
            for i in range(count):
                yield b"data: %d\n\n" % i
        finally:
            closed.append(True)

    return body()


@pytest.mark.anyio
async def test_send_event_when_sends_complete_then_every_frame_sent_and_timer_closed() -> None:
    sent: list[bytes] = []
    closed: list[bool] = []

    async def send(message: Any) -> None:
        sent.append(message.get("body", b""))

    access: dict[str, Any] = {}
    response = _EventSourceResponse(frames(500, closed), access=access, ping=0, send_timeout=30)
    with anyio.fail_after(5):
        await response(SCOPE, never_disconnects, send)
    assert sent[1:-1] == [b"data: %d\n\n" % i for i in range(500)]
    assert closed == [True]
    assert "outcome" not in access
    watchdog = response._send_watchdog
    assert watchdog is not None and not watchdog.waiting


@pytest.mark.anyio
async def test_send_event_when_a_send_blocks_past_the_timeout_then_reader_let_go() -> None:
    sent: list[bytes] = []
    closed: list[bool] = []
    stalled = anyio.Event()

    async def send(message: Any) -> None:
        body = message.get("body", b"")
        if body.startswith(b"data: 3"):
            stalled.set()
            await anyio.sleep_forever()  # the reader's socket is full
        sent.append(body)

    access: dict[str, Any] = {"stream_id": "s1"}
    response = _EventSourceResponse(frames(10, closed), access=access, ping=0, send_timeout=0.05)
    with anyio.fail_after(5):
        await response(SCOPE, never_disconnects, send)
    assert stalled.is_set()
    assert sent[1:] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert access["outcome"] == "send_timeout"
    assert closed == [True]  # the body was closed, so the reader detached from its run


@pytest.mark.anyio
async def test_send_event_when_a_ping_comes_during_a_blocked_send_then_both_bounded() -> None:
    pings = 0

    async def send(message: Any) -> None:
        nonlocal pings
        body = message.get("body", b"")
        if body.startswith(b": ping"):
            pings += 1
            await anyio.sleep_forever()
        if body.startswith(b"data: 1"):
            await anyio.sleep_forever()

    access: dict[str, Any] = {}
    response = _EventSourceResponse(
        frames(5, []),
        access=access,
        ping=0.01,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        send_timeout=0.2,
    )
    with anyio.fail_after(5):
        await response(SCOPE, never_disconnects, send)
    assert pings >= 1
    assert access["outcome"] == "send_timeout"


@pytest.mark.anyio
async def test_send_event_when_no_timeout_then_sent_directly_without_a_timer() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    response = _EventSourceResponse(frames(3, []), access={}, ping=0)
    with anyio.fail_after(5):
        await response(SCOPE, never_disconnects, send)
    assert len(sent) == 5  # start, three events, end
    assert response._send_watchdog is None
