"""``POST /chat`` with ``Accept: application/json``: read the run to its end, answer once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Final

import msgspec
from starlette.responses import Response
from starlette.types import Receive

from chat.bodies import ChatReply
from chat.errors import spec_for
from chat.events import Done, Error
from chat.http.checks import JSON_TYPE
from chat.http.replies import error_response
from chat.service.record import ChatRun

_json: Final = msgspec.json.Encoder()


async def read_unless_disconnected(frames: AsyncIterator[bytes], receive: Receive) -> bool:
    """Read ``frames`` to their end; False, reading stopped, when the client disconnects first.

    A JSON reply is only written at the end, so without watching ``receive`` a client that
    hangs up would leave its run (and the provider's bill) going until the answer is complete.
    """

    async def read_all() -> None:
        async with aclosing(frames):
            async for _ in frames:
                pass

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # the body was read already: only the disconnect can come

    reading = asyncio.ensure_future(read_all())
    watching = asyncio.ensure_future(until_disconnect())
    try:
        await asyncio.wait((reading, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watching, reading):
            if not task.done():
                task.cancel()
        await asyncio.gather(watching, reading, return_exceptions=True)
    if reading.cancelled() or not reading.done():
        return False
    reading.result()  # a failure of the read itself propagates
    return True


def json_reply(run: ChatRun, request_id: str, headers: dict[str, str]) -> Response:
    """The whole answer as JSON; a stream error becomes the matching error status.

    A retryable failure carries ``Retry-After``: the provider's own when it sent one (a 429),
    else 1 s.
    """
    terminal = run.terminal
    if type(terminal) is Done:
        body = ChatReply(
            text=run.text(),
            finish_reason=terminal.finish_reason,
            usage=terminal.usage,
            request_id=request_id,
            conversation_id=terminal.conversation_id,
        )
        return Response(_json.encode(body), media_type=JSON_TYPE, headers=headers)
    code = terminal.code if type(terminal) is Error else "internal_error"
    retryable = terminal.retryable if type(terminal) is Error else spec_for(code).retryable
    if retryable:
        headers = {**headers, "Retry-After": run.stats.retry_after or "1"}
    return error_response(code, request_id, headers=headers)
