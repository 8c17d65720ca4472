"""The OpenAPI document's components: schemas from the msgspec Structs, and the security scheme."""

from __future__ import annotations

from typing import Any

import msgspec

from chat.bodies import ChatReply, Conversation, ErrorBody, Health, Ready, StreamCreated
from chat.errors import ERRORS
from chat.events import ChatEvent
from chat.openapi.parts import (
    JSON,
    REF,
    schema,
)
from chat.requests import ChatRequest


def components() -> dict[str, Any]:
    (chat_event, *_), schemas = msgspec.json.schema_components(
        [ChatEvent, ChatRequest, ChatReply, ErrorBody, StreamCreated, Health, Ready, Conversation],
        ref_template=REF,
    )
    schemas["ChatEvent"] = {
        "title": "ChatEvent",
        "description": "One stream event: the `data:` of an SSE frame whose `event:` is `type`.",
        **chat_event,
    }
    # OpenAPI before 3.2 reads an event stream's `schema` as the schema of each event.
    schemas["ChatEventFrame"] = {
        "title": "ChatEventFrame",
        "description": "One SSE event; its `data:` line is a `ChatEvent` in JSON.",
        "type": "object",
        "properties": {
            "event": {"enum": ["delta", "done", "error"]},
            "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "retry": {"type": "integer", "minimum": 0},
            "data": {
                "type": "string",
                "contentMediaType": JSON,
                "contentSchema": schema("ChatEvent"),
            },
        },
    }
    codes = sorted(ERRORS)
    # The Structs say `str` (codes are added in one table); the document names them all.
    schemas["ErrorInfo"]["properties"]["code"]["enum"] = codes
    schemas["Error"]["properties"]["code"]["enum"] = codes
    return {
        "schemas": schemas,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "One of CHAT_API_KEYS; needed only when that is set.",
            }
        },
    }
