"""The ceiling: a bare ASGI app that streams the service's SSE bytes with no model behind it.

It answers ``POST /chat`` with exactly the frames the service sends for the fake upstream's
answer (``encode_sse`` of ``tok0 ``, ``tok1 `` … then ``done``), honouring the same
``[[tokens=N,delay_ms=D]]`` directives in the message as ``tests.support.fake_upstream``. With
no delay the whole answer goes out in one body chunk, as the fake upstream writes it. What it
costs is what uvicorn and the event loop cost; everything the service spends above it is ours.

    uvicorn bench.bare_asgi:app --port 8003
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Final

import msgspec

from chat.events import Delta, Done, Usage, encode_sse
from tests.support.fake_upstream import DEFAULT_TOKENS, parse_directives, token_text

_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
_OK: Final = b'{"status":"ok"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``POST /chat`` streams the answer; ``GET /healthz`` says ok; lifespan is accepted."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] != "/chat":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": _OK})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    text = msgspec.json.decode(body).get("message", "")
    directives = parse_directives(text)
    tokens = int(directives.get("tokens", DEFAULT_TOKENS))
    delay_s = float(directives.get("delay_ms", 0)) / 1000
    request_id = uuid.uuid4().hex
    headers = [*_HEADERS, (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    frames = [encode_sse(Delta(token_text(i)), i + 1) for i in range(tokens)]
    usage = Usage(len(text.split()) + 1, tokens, len(text.split()) + 1 + tokens)
    done = encode_sse(Done("stop", usage, request_id), tokens + 1)
    if not delay_s:
        await send({"type": "http.response.body", "body": b"".join([*frames, done])})
        return
    for frame in frames:
        await asyncio.sleep(delay_s)
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": done})
