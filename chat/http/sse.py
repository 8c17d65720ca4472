"""The event stream response: sse-starlette's, with our pings, headers and send-timeout rule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from chat.events import encode_retry
from chat.run.deadlines import Watchdog
from chat.seams import drop_connection_header, route_event_sends
from chat.state import AppState
from logging_config.dropped_readers import mark_reader_dropped

log = structlog.get_logger(__name__)


@route_event_sends
class _EventSourceResponse(EventSourceResponse):
    """sse-starlette's response, with one timer for its send timeout, and what happens when a
    reader stops reading.

    With ``send_timeout`` set (``CHAT_SEND_TIMEOUT_S``), a send still blocked after that long
    (the reader's socket is full) makes sse-starlette close the body, so the reader detaches
    (the run follows the detached-grace rule), and raise ``SendTimeoutError``. That is the
    reader's doing, not a server error: it is logged as ``stream_send_timeout`` and the app
    returns, so uvicorn closes the connection (the body cannot be finished on a full socket).

    The library opens a cancel scope (a timer) per event for that; here one ``Watchdog`` per
    response serves every event: a send moves its deadline (a float), and the timer re-arms
    only when it fires early, about once per ``send_timeout`` (``send_event``).
    """

    def __init__(self, *args: Any, access: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._access = access
        self._send_watchdog: Watchdog | None = None

    async def send_event(self, send: Send, message: Message) -> None:
        """One ASGI message of the stream, bounded by ``send_timeout`` (sse-starlette's hook)."""
        timeout = self.send_timeout
        if timeout is None:
            await send(message)
            return
        watchdog = self._send_watchdog
        deadline = asyncio.get_running_loop().time() + timeout
        if watchdog is None:
            watchdog = self._send_watchdog = Watchdog(deadline)
        elif watchdog.waiting:
            # A second send while one is blocked (a ping and an event): the library's timer.
            await self.library_send_event(send, message)  # type: ignore[attr-defined]
            return
        else:
            watchdog.deadline = deadline
        try:
            await watchdog.wait(send(message))
        except TimeoutError:
            raise SendTimeoutError from None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._access["outcome"] = "send_timeout"
            mark_reader_dropped()
            log.info(
                "stream_send_timeout",
                stream_id=self._access.get("stream_id"),
                send_timeout_s=self.send_timeout,
            )
        finally:
            if self._send_watchdog is not None:
                self._send_watchdog.close()


def event_stream(
    body: AsyncIterator[bytes],
    state: AppState,
    headers: dict[str, str],
    access: dict[str, Any],
    *,
    retry_ms: int | None = None,
) -> EventSourceResponse:
    """The SSE response of ``body`` (whole frames), first telling EventSource ``retry_ms``."""
    settings = state.settings
    response = _EventSourceResponse(
        _with_retry(body, retry_ms) if retry_ms is not None else body,
        access=access,
        ping=settings.ping_interval_s,
        sep="\n",
        ping_message_factory=_ping,
        headers={"Cache-Control": "no-store", **headers},
        # A reader that reads nothing this long is let go (0: never).
        send_timeout=settings.send_timeout_s or None,
        # sse-starlette cancels streams on shutdown unless told to wait; our drainer ends them
        # first with a farewell event, so give it the grace period plus time to send it. The
        # event is only a flag the library sets (our drainer acts on its own): one for all.
        shutdown_event=state.sse_shutdown,
        shutdown_grace_period=settings.shutdown_grace_s + 2.0,
    )
    drop_connection_header(response)
    return response


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


async def _with_retry(body: AsyncIterator[bytes], retry_ms: int) -> AsyncIterator[bytes]:
    yield encode_retry(retry_ms)
    async with aclosing(body):
        async for chunk in body:
            yield chunk
