"""The JSON bodies the service answers with, other than stream events: one Struct each.

The same Structs encode the responses and generate ``/openapi.json``, so the document cannot
drift from the bytes. Field order is the wire order.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from chat.errors import spec_for
from chat.events import Usage


class ErrorDetail(msgspec.Struct, frozen=True):
    """Where a 422 body is wrong: a JSON path such as ``$.message``, and what is wrong there."""

    path: str
    message: str


class ErrorInfo(msgspec.Struct, frozen=True):
    """The error itself: a contract code, a message for people, the request's id."""

    code: str
    message: str
    request_id: str
    details: list[ErrorDetail] | msgspec.UnsetType = msgspec.UNSET


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answered before a stream starts (and JSON-mode failures)."""

    error: ErrorInfo


class ChatReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """``POST /chat`` with ``Accept: application/json``: the whole answer at once."""

    text: str
    finish_reason: str
    usage: Usage
    request_id: str
    conversation_id: str | None = None  # only when the request named one


class StreamCreated(msgspec.Struct, frozen=True):
    """``POST /chat/streams``: where to read the run's events (``events_url`` is relative)."""

    stream_id: str
    events_url: str
    request_id: str


class Health(msgspec.Struct, frozen=True):
    """``GET /healthz``: the process serves."""

    status: Literal["ok"] = "ok"


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /readyz``: the backend is loaded, the stores are reachable, not draining."""

    status: Literal["ready"] = "ready"
    backend: str
    open_streams: int


class ConversationTurn(msgspec.Struct, frozen=True):
    """One turn of a conversation as it was delivered."""

    role: Literal["user", "assistant"]
    text: str


class Conversation(msgspec.Struct, frozen=True):
    """``GET /conversations/{id}``: the stored history, oldest turn first."""

    conversation_id: str
    turns: list[ConversationTurn]
    request_id: str


_json: Final = msgspec.json.Encoder()


def error_body(
    code: str, request_id: str, message: str | None = None, details: Any = None
) -> bytes:
    """The contract's error JSON: ``{"error": {"code", "message", "request_id"[, "details"]}}``.

    The one builder of it: the HTTP layer's errors and the correlation middleware's last-resort
    500 both use it, so the bytes cannot differ.
    """
    info = ErrorInfo(
        code=code,
        message=message or spec_for(code).message,
        request_id=request_id,
        details=[_detail(d) for d in details] if details else msgspec.UNSET,
    )
    return _json.encode(ErrorBody(info))


def _detail(detail: ErrorDetail | dict[str, str]) -> ErrorDetail:
    return detail if isinstance(detail, ErrorDetail) else ErrorDetail(**detail)
