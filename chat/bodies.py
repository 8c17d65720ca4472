"""The JSON bodies the service answers with, other than stream events: one Struct each.

The same Structs encode the responses and generate ``/openapi.json``, so the document cannot
drift from the bytes. Field order is the wire order.
"""

from __future__ import annotations

from typing import Literal

import msgspec

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
