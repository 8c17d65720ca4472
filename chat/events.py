"""Stream events (``delta``, ``done``, ``error``) and their Server-Sent Events bytes.

Pure: imports nothing of ours. One module-level encoder turns an event into its SSE frame once;
the hot path is one ``msgspec`` encode and one bytes join per event.
"""

from __future__ import annotations

from typing import Final

import msgspec


class Usage(msgspec.Struct, frozen=True):
    """Token counts reported by the model provider."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ChatEventBase(msgspec.Struct, frozen=True, tag_field="type"):
    """Base of the tagged union; the ``type`` field names the event."""


class Delta(ChatEventBase, frozen=True, tag="delta"):
    """A piece of the answer; all delta texts concatenated are the whole answer."""

    text: str


class Done(ChatEventBase, frozen=True, tag="done", omit_defaults=True):
    """The answer is complete."""

    finish_reason: str
    usage: Usage
    request_id: str
    # Only when the request named a conversation; omitted otherwise, so those bytes stay as before.
    conversation_id: str | None = None


class Error(ChatEventBase, frozen=True, tag="error", omit_defaults=True):
    """The stream ends without a complete answer; deltas sent before it stay sent."""

    code: str
    message: str
    retryable: bool
    request_id: str
    conversation_id: str | None = None


ChatEvent = Delta | Done | Error

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(ChatEvent)

_DELTA_HEAD: Final = b"event: delta\nid: "
_DONE_HEAD: Final = b"event: done\nid: "
_ERROR_HEAD: Final = b"event: error\nid: "
_DATA: Final = b"\ndata: "
_END: Final = b"\n\n"

PING_FRAME: Final = b": ping\n\n"


def encode_json(event: ChatEvent) -> bytes:
    """The event's one-line JSON, as in the ``data:`` field."""
    return _encoder.encode(event)


def decode_json(data: bytes | str) -> ChatEvent:
    """Parse one ``data:`` payload back into an event (for clients and tests)."""
    return _decoder.decode(data)


def encode_sse(event: ChatEvent, event_id: int) -> bytes:
    """The full SSE frame: ``event:``, ``id:``, ``data:`` and the blank line."""
    if type(event) is Delta:
        head = _DELTA_HEAD
    elif type(event) is Done:
        head = _DONE_HEAD
    else:
        head = _ERROR_HEAD
    # JSON from msgspec never contains a raw newline, so data stays one line.
    return b"".join((head, str(event_id).encode(), _DATA, _encoder.encode(event), _END))


def encode_retry(milliseconds: int) -> bytes:
    """A ``retry:`` field telling EventSource how long to wait before reconnecting."""
    return b"retry: %d\n\n" % milliseconds
