"""The chat routes of the OpenAPI document: POST /chat, the streams, the conversations."""

from __future__ import annotations

from typing import Any

from chat.openapi.parts import (
    CHAT_BODY,
    CONVERSATION_ID_PARAM,
    EVENT_ID,
    INTERNAL,
    JSON,
    OPTIONAL_KEY,
    REQUEST_ID_PARAM,
    SSE,
    START_ERRORS,
    STREAM_ID_PARAM,
    STREAM_TEXT,
    errors,
    event_stream,
    headers_of,
    json_reply,
    no_content,
    schema,
)


def chat_paths() -> dict[str, Any]:
    """The chat routes: one reply, resumable streams, and conversations."""
    chat_json_failures = {
        "409": errors(409, "conversation_busy", "cancelled", headers=("Retry-After",)),
        "502": errors(502, "upstream_auth", "upstream_error", headers=("X-Stream-ID",)),
        "503": errors(
            503,
            "overloaded",
            "shutting_down",
            "not_ready",
            "store_unavailable",
            "upstream_rate_limited",
            "upstream_unavailable",
        ),
        "504": errors(504, "upstream_timeout", headers=("X-Stream-ID", "Retry-After")),
    }
    return {
        "/chat": {
            "post": {
                "operationId": "chat",
                "summary": "Stream one reply (or, with Accept: application/json, answer once)",
                "tags": ["chat"],
                "security": OPTIONAL_KEY,
                "parameters": [REQUEST_ID_PARAM],
                "requestBody": CHAT_BODY,
                "responses": {
                    "200": {
                        "description": STREAM_TEXT
                        + " With `Accept: application/json`: the whole answer as one JSON reply.",
                        "headers": headers_of("X-Stream-ID"),
                        "content": {
                            SSE: {"schema": schema("ChatEventFrame")},
                            JSON: {"schema": schema("ChatReply")},
                        },
                    },
                    **START_ERRORS,
                    **chat_json_failures,
                },
            }
        },
        "/chat/streams": {
            "post": {
                "operationId": "createStream",
                "summary": "Start a run whose events EventSource readers follow",
                "tags": ["chat"],
                "security": OPTIONAL_KEY,
                "parameters": [REQUEST_ID_PARAM],
                "requestBody": CHAT_BODY,
                "responses": {
                    "201": {
                        **json_reply(
                            "StreamCreated", "The run started.", "Location", "X-Stream-ID"
                        ),
                        "links": {
                            "readStream": {
                                "operationId": "readStream",
                                "parameters": {"stream_id": "$response.body#/stream_id"},
                            },
                            "cancelStream": {
                                "operationId": "cancelStream",
                                "parameters": {"stream_id": "$response.body#/stream_id"},
                            },
                        },
                    },
                    **START_ERRORS,
                },
            }
        },
        "/chat/streams/{stream_id}": {
            "parameters": [STREAM_ID_PARAM],
            "get": {
                "operationId": "readStream",
                "summary": "Read a stream from its start, or after Last-Event-ID",
                "tags": ["chat"],
                "parameters": [
                    REQUEST_ID_PARAM,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "The last event id the reader has (EventSource sends it).",
                        "schema": {"type": "string", "pattern": EVENT_ID},
                    },
                    {
                        "name": "lastEventId",
                        "in": "query",
                        "required": False,
                        "description": "Last-Event-ID for polyfills that cannot send headers.",
                        "schema": {"type": "string", "pattern": EVENT_ID},
                    },
                ],
                "responses": {
                    "200": event_stream(
                        "`retry:` first, then every event after Last-Event-ID. " + STREAM_TEXT
                    ),
                    "204": no_content(
                        "The stream is finished and the reader has its last event: stop."
                    ),
                    "400": errors(400, "invalid_request"),
                    "404": errors(404, "not_found"),
                    "500": INTERNAL,
                    "503": errors(503, "store_unavailable"),
                },
            },
            "delete": {
                "operationId": "cancelStream",
                "summary": "Cancel the run; its readers get one error event `cancelled`",
                "tags": ["chat"],
                "security": OPTIONAL_KEY,
                "parameters": [REQUEST_ID_PARAM],
                "responses": {
                    "204": no_content("Cancelled (or already finished)."),
                    "401": errors(401, "unauthorized"),
                    "404": errors(404, "not_found"),
                    "500": INTERNAL,
                    "503": errors(503, "store_unavailable"),
                },
            },
        },
        "/conversations/{conversation_id}": {
            "parameters": [CONVERSATION_ID_PARAM],
            "get": {
                "operationId": "getConversation",
                "summary": "A conversation's stored turns, oldest first",
                "tags": ["conversations"],
                "security": OPTIONAL_KEY,
                "parameters": [REQUEST_ID_PARAM],
                "responses": {
                    "200": json_reply("Conversation", "The conversation."),
                    "401": errors(401, "unauthorized"),
                    "404": errors(404, "not_found"),
                    "500": INTERNAL,
                    "503": errors(503, "store_unavailable"),
                },
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Forget a conversation",
                "tags": ["conversations"],
                "security": OPTIONAL_KEY,
                "parameters": [REQUEST_ID_PARAM],
                "responses": {
                    "204": no_content("The history is gone."),
                    "401": errors(401, "unauthorized"),
                    "404": errors(404, "not_found"),
                    "409": errors(409, "conversation_busy", headers=("Retry-After",)),
                    "500": INTERNAL,
                    "503": errors(503, "store_unavailable"),
                },
            },
        },
    }
