"""The ``POST /chat`` body: its Struct, its decoding, and errors that point at the JSON path."""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

from chat.errors import ChatError

ConversationId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
# Checked in decode_chat_request (its errors say "must not be blank"); said here for the schema.
Message = Annotated[
    str,
    msgspec.Meta(
        extra_json_schema={
            "minLength": 1,
            "pattern": r"\S",
            "description": "Not blank; at most CHAT_MAX_MESSAGE_CHARS characters (32000).",
        }
    ),
]


class ChatRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One user message, optionally continuing a conversation."""

    message: Message
    conversation_id: ConversationId | None = None


_decoder: Final = msgspec.json.Decoder(ChatRequest)
_AT_PATH: Final = re.compile(r" - at `(\$[^`]*)`$")
_UNKNOWN_FIELD: Final = re.compile(r"^Object contains unknown field `([^`]*)`")
_MISSING_FIELD: Final = re.compile(r"^Object missing required field `([^`]*)`")


def decode_chat_request(body: bytes, *, max_message_chars: int) -> ChatRequest:
    """Decode and check a body; raise ``ChatError`` (400 or 422) saying what is wrong and where."""
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        path, message = split_validation_error(str(exc))
        raise ChatError("invalid_request", details=[{"path": path, "message": message}]) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        # msgspec's text names byte offsets only; a fixed message is clearer and leaks nothing.
        # Bytes that are not UTF-8 inside a string (a lone 0xFF, an overlong or surrogate
        # encoding) surface as UnicodeDecodeError, not DecodeError: the body is not JSON either.
        raise ChatError("invalid_json") from None
    if not request.message.strip():
        raise ChatError(
            "invalid_request",
            details=[{"path": "$.message", "message": "must not be blank"}],
        )
    if len(request.message) > max_message_chars:
        raise ChatError(
            "invalid_request",
            details=[
                {"path": "$.message", "message": f"must be at most {max_message_chars} characters"}
            ],
        )
    return request


def split_validation_error(text: str) -> tuple[str, str]:
    """Turn msgspec's ``"Expected `str`, got `int` - at `$.message`"`` into (path, message)."""
    match = _AT_PATH.search(text)
    if match:
        return match.group(1), text[: match.start()]
    match = _UNKNOWN_FIELD.match(text)
    if match:
        return f"$.{match.group(1)}", "unknown field"
    match = _MISSING_FIELD.match(text)
    if match:
        return f"$.{match.group(1)}", "required field is missing"
    return "$", text
