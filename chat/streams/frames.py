"""The frames the stream manager writes itself, and the ids it hands out."""

from __future__ import annotations

import secrets
from typing import Final

from chat.errors import spec_for
from chat.events import Error, encode_sse

_ID_FIELD: Final = b"\nid: "


def error_frame(code: str, request_id: str, event_id: int) -> bytes:
    """The SSE frame of a terminal ``error`` event with the contract's message for ``code``."""
    spec = spec_for(code)
    event = Error(code=code, message=spec.message, retryable=spec.retryable, request_id=request_id)
    return encode_sse(event, event_id)


def last_event_id(chunk: bytes, default: int) -> int:
    """The id of the last frame in ``chunk`` (frames as ``encode_sse`` writes them)."""
    start = chunk.rfind(_ID_FIELD)
    if start < 0:
        return default
    start += len(_ID_FIELD)
    end = chunk.find(b"\n", start)
    try:
        return int(chunk[start : end if end >= 0 else len(chunk)])
    except ValueError:
        return default


def new_stream_id() -> str:
    """128 random bits, URL-safe: holding the id is what grants reading the stream."""
    return secrets.token_urlsafe(16)
