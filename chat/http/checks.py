"""Pure checks of a request's headers and body size, before anything is decoded."""

from __future__ import annotations

import hmac
from typing import Final

from starlette.requests import Request

from chat.errors import ChatError

JSON_TYPE: Final = "application/json"
# A body over the limit is not read to its end: the connection is closed after the answer.
_CLOSE: Final = {"Connection": "close"}


def wants_json(accept: str | None) -> bool:
    """JSON only when the client asks for JSON and not for an event stream."""
    if not accept:
        return False
    accept = accept.lower()
    return JSON_TYPE in accept and "text/event-stream" not in accept


def is_json_content_type(content_type: str | None) -> bool:
    """``application/json``, with or without parameters such as charset."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == JSON_TYPE


def is_authorized(authorization: str | None, api_keys: tuple[str, ...]) -> bool:
    """No keys configured means no auth; otherwise a matching bearer token (constant time)."""
    if not api_keys:
        return True
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    presented = token.strip().encode()
    # Compare against every key so timing does not reveal which one matched.
    matched = False
    for key in api_keys:
        matched |= hmac.compare_digest(presented, key.encode())
    return matched


def parse_last_event_id(raw: str | None) -> int | None:
    """``None`` or empty means from the start (0); anything but a small non-negative int is bad."""
    if raw is None or raw.strip() == "":
        return 0
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        return None
    return int(raw)


def declared_length(request: Request) -> int | None:
    """The Content-Length header as an int, or None when absent or malformed."""
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


def refuse_declared_oversize(request: Request, limit: int) -> None:
    """413 at once when Content-Length already says the body is over ``limit``."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise ChatError("payload_too_large", headers=_CLOSE)


async def read_body_limited(request: Request, limit: int) -> bytes:
    """Read the body but stop at ``limit`` bytes: a chunked or lying upload is cut off there."""
    refuse_declared_oversize(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ChatError("payload_too_large", headers=_CLOSE)
        chunks.append(chunk)
    return b"".join(chunks)
