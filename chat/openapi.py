"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, built from the msgspec Structs.

The request, the stream events and every JSON body come from the same Structs that decode and
encode them (``msgspec.json.schema_components``); only the routes, their statuses and headers are
written here. The SSE response is ``text/event-stream``; its schema is one event
(``ChatEventFrame``, as OpenAPI 3.1 reads streams), whose ``data:`` holds a ``ChatEvent`` in JSON.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec

from chat.bodies import ChatReply, Conversation, ErrorBody, Health, Ready, StreamCreated
from chat.errors import ERRORS
from chat.events import ChatEvent
from chat.requests import ChatRequest

OPENAPI_VERSION: Final = "3.1.0"
API_VERSION: Final = "1"
_REF: Final = "#/components/schemas/{name}"
_SSE: Final = "text/event-stream"
_JSON: Final = "application/json"

# Codes the service answers with, per status, and when (API.md, "Errors before a stream starts").
_WHEN: Final[dict[str, str]] = {
    "invalid_json": "the body is not JSON (also: too deep, bad escapes, not UTF-8)",
    "invalid_request": "JSON of the wrong shape (422), or a malformed Last-Event-ID (400)",
    "unauthorized": "CHAT_API_KEYS is set and the bearer token is missing or wrong",
    "not_found": "unknown stream or conversation (also: a conversation of another key)",
    "conversation_busy": "another run of the same conversation is still going; Retry-After set",
    "cancelled": "JSON mode: the run was cancelled (DELETE)",
    "payload_too_large": "body over CHAT_MAX_BODY_BYTES; the body is not read",
    "unsupported_media_type": "Content-Type is not application/json",
    "overloaded": "more than CHAT_MAX_CONCURRENT_STREAMS streams; Retry-After set",
    "shutting_down": "the process drains after SIGTERM",
    "not_ready": "the model is not loaded yet",
    "store_unavailable": "Redis (or the conversation database) cannot be reached",
    "upstream_auth": "JSON mode: the model provider rejected our credentials",
    "upstream_error": "JSON mode: the model provider returned an error",
    "upstream_rate_limited": "JSON mode: the model provider is rate limiting",
    "upstream_unavailable": "JSON mode: the model provider is unavailable",
    "upstream_timeout": "JSON mode: the model did not answer in time",
    "internal_error": "a bug; the body still carries the request id",
}

_REQUEST_ID_PARAM: Final = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Kept when 1-128 characters of [A-Za-z0-9._:-]; otherwise a fresh id is made.",
    "schema": {"type": "string"},
}
_STREAM_ID_PARAM: Final = {
    "name": "stream_id",
    "in": "path",
    "required": True,
    "description": "The id from POST /chat/streams (or X-Stream-ID of POST /chat).",
    "schema": {"type": "string"},
}
_CONVERSATION_ID_PARAM: Final = {
    "name": "conversation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
}
# What parse_last_event_id accepts: empty (from the start) or a small non-negative integer.
_EVENT_ID: Final = "^[0-9]{0,12}$"
_OPTIONAL_KEY: Final = [{}, {"bearer": []}]


def _header(description: str, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": "string"}}


_HEADERS: Final = {
    "X-Request-ID": _header("The correlation id (also in logs and events).", required=True),
    "X-Stream-ID": _header("The run's stream id: a fetch client resumes at /chat/streams/{id}."),
    "Retry-After": _header("Seconds to wait before retrying."),
    "Location": _header("The stream's events_url.", required=True),
    "WWW-Authenticate": _header("Bearer"),
}


def _headers(*names: str) -> dict[str, Any]:
    return {name: _HEADERS[name] for name in ("X-Request-ID", *names)}


def _schema(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _errors(status: int, *codes: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A response with the error body, its codes and when each is sent."""
    lines = "; ".join(f"`{code}`: {_WHEN[code]}" for code in codes)
    if status == 503:
        headers = ("Retry-After", *headers)
    if status == 401:
        headers = ("WWW-Authenticate", *headers)
    return {
        "description": lines,
        "headers": _headers(*headers),
        "content": {_JSON: {"schema": _schema("ErrorBody")}},
    }


def _json(name: str, description: str, *headers: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(*headers),
        "content": {_JSON: {"schema": _schema(name)}},
    }


def _no_content(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _headers()}


def _event_stream(description: str, *headers: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(*headers),
        "content": {_SSE: {"schema": _schema("ChatEventFrame")}},
    }


_INTERNAL: Final = _errors(500, "internal_error")
_START_ERRORS: Final = {
    "400": _errors(400, "invalid_json"),
    "401": _errors(401, "unauthorized"),
    "404": _errors(404, "not_found"),
    "409": _errors(409, "conversation_busy", headers=("Retry-After",)),
    "413": _errors(413, "payload_too_large"),
    "415": _errors(415, "unsupported_media_type"),
    "422": _errors(422, "invalid_request"),
    "500": _INTERNAL,
    "503": _errors(503, "overloaded", "shutting_down", "not_ready", "store_unavailable"),
}
_STREAM_TEXT: Final = (
    "The answer as Server-Sent Events: `delta` events, then exactly one `done` or `error`. "
    "Each event has `event:` (its type), `id:` (1, 2, 3 ... within the stream) and one line "
    "of JSON `data:`, one of the `ChatEvent` union; `: ping` comments keep it open."
)
_CHAT_BODY: Final = {
    "required": True,
    "content": {_JSON: {"schema": _schema("ChatRequest")}},
}


def _paths() -> dict[str, Any]:
    chat_json_failures = {
        "409": _errors(409, "conversation_busy", "cancelled", headers=("Retry-After",)),
        "502": _errors(502, "upstream_auth", "upstream_error", headers=("X-Stream-ID",)),
        "503": _errors(
            503,
            "overloaded",
            "shutting_down",
            "not_ready",
            "store_unavailable",
            "upstream_rate_limited",
            "upstream_unavailable",
        ),
        "504": _errors(504, "upstream_timeout", headers=("X-Stream-ID", "Retry-After")),
    }
    return {
        "/chat": {
            "post": {
                "operationId": "chat",
                "summary": "Stream one reply (or, with Accept: application/json, answer once)",
                "tags": ["chat"],
                "security": _OPTIONAL_KEY,
                "parameters": [_REQUEST_ID_PARAM],
                "requestBody": _CHAT_BODY,
                "responses": {
                    "200": {
                        "description": _STREAM_TEXT
                        + " With `Accept: application/json`: the whole answer as one JSON reply.",
                        "headers": _headers("X-Stream-ID"),
                        "content": {
                            _SSE: {"schema": _schema("ChatEventFrame")},
                            _JSON: {"schema": _schema("ChatReply")},
                        },
                    },
                    **_START_ERRORS,
                    **chat_json_failures,
                },
            }
        },
        "/chat/streams": {
            "post": {
                "operationId": "createStream",
                "summary": "Start a run whose events EventSource readers follow",
                "tags": ["chat"],
                "security": _OPTIONAL_KEY,
                "parameters": [_REQUEST_ID_PARAM],
                "requestBody": _CHAT_BODY,
                "responses": {
                    "201": {
                        **_json("StreamCreated", "The run started.", "Location", "X-Stream-ID"),
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
                    **_START_ERRORS,
                },
            }
        },
        "/chat/streams/{stream_id}": {
            "parameters": [_STREAM_ID_PARAM],
            "get": {
                "operationId": "readStream",
                "summary": "Read a stream from its start, or after Last-Event-ID",
                "tags": ["chat"],
                "parameters": [
                    _REQUEST_ID_PARAM,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "The last event id the reader has (EventSource sends it).",
                        "schema": {"type": "string", "pattern": _EVENT_ID},
                    },
                    {
                        "name": "lastEventId",
                        "in": "query",
                        "required": False,
                        "description": "Last-Event-ID for polyfills that cannot send headers.",
                        "schema": {"type": "string", "pattern": _EVENT_ID},
                    },
                ],
                "responses": {
                    "200": _event_stream(
                        "`retry:` first, then every event after Last-Event-ID. " + _STREAM_TEXT
                    ),
                    "204": _no_content(
                        "The stream is finished and the reader has its last event: stop."
                    ),
                    "400": _errors(400, "invalid_request"),
                    "404": _errors(404, "not_found"),
                    "500": _INTERNAL,
                    "503": _errors(503, "store_unavailable"),
                },
            },
            "delete": {
                "operationId": "cancelStream",
                "summary": "Cancel the run; its readers get one error event `cancelled`",
                "tags": ["chat"],
                "security": _OPTIONAL_KEY,
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "204": _no_content("Cancelled (or already finished)."),
                    "401": _errors(401, "unauthorized"),
                    "404": _errors(404, "not_found"),
                    "500": _INTERNAL,
                    "503": _errors(503, "store_unavailable"),
                },
            },
        },
        "/conversations/{conversation_id}": {
            "parameters": [_CONVERSATION_ID_PARAM],
            "get": {
                "operationId": "getConversation",
                "summary": "A conversation's stored turns, oldest first",
                "tags": ["conversations"],
                "security": _OPTIONAL_KEY,
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _json("Conversation", "The conversation."),
                    "401": _errors(401, "unauthorized"),
                    "404": _errors(404, "not_found"),
                    "500": _INTERNAL,
                    "503": _errors(503, "store_unavailable"),
                },
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Forget a conversation",
                "tags": ["conversations"],
                "security": _OPTIONAL_KEY,
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "204": _no_content("The history is gone."),
                    "401": _errors(401, "unauthorized"),
                    "404": _errors(404, "not_found"),
                    "409": _errors(409, "conversation_busy", headers=("Retry-After",)),
                    "500": _INTERNAL,
                    "503": _errors(503, "store_unavailable"),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process serves",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {"200": _json("Health", "The process serves.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the backend and the stores are ready",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _json("Ready", "Ready to serve streams."),
                    "503": _errors(503, "not_ready", "shutting_down", "store_unavailable"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, summed over all workers",
                "tags": ["operations"],
                "security": _OPTIONAL_KEY,
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "Prometheus text format (OpenMetrics when asked for).",
                        "headers": _headers(),
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    },
                    "401": _errors(401, "unauthorized"),
                    "404": {
                        **_errors(404, "not_found"),
                        "description": "`not_found`: metrics are off (CHAT_METRICS=false)",
                    },
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "headers": _headers(),
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "operationId": "demoPage",
                "summary": "The demo chat page (plain HTML, no build step, no remote assets)",
                "tags": ["demo"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "The page.",
                        "headers": _headers(),
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/static/{path}": {
            "get": {
                "operationId": "demoAsset",
                "summary": "The demo page's scripts and styles",
                "tags": ["demo"],
                "parameters": [
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
                    _REQUEST_ID_PARAM,
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "headers": _headers(),
                        "content": {
                            "text/css": {"schema": {"type": "string"}},
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/html": {"schema": {"type": "string"}},
                        },
                    },
                    "304": _no_content("Not modified (If-None-Match / If-Modified-Since)."),
                    "404": _errors(404, "not_found"),
                },
            }
        },
    }


def _components() -> dict[str, Any]:
    (chat_event, *_), schemas = msgspec.json.schema_components(
        [ChatEvent, ChatRequest, ChatReply, ErrorBody, StreamCreated, Health, Ready, Conversation],
        ref_template=_REF,
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
                "contentMediaType": _JSON,
                "contentSchema": _schema("ChatEvent"),
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


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI document, built once."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Streaming chat API",
            "version": API_VERSION,
            "description": (
                "JSON in, Server-Sent Events out. Every response carries X-Request-ID; errors "
                "before a stream starts are `ErrorBody`; a stream that answered 200 ends with "
                "exactly one `done` or `error` event. A method that a path does not list is "
                "answered 405 `method_not_allowed` with `Allow`; an unknown path 404 `not_found`."
            ),
        },
        "paths": _paths(),
        "components": _components(),
    }


@functools.cache
def document_bytes() -> bytes:
    """``document()`` as JSON, encoded once."""
    return msgspec.json.encode(document())
