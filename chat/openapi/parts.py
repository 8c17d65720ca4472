"""The pieces every path of the OpenAPI document is written with: parameters, headers, errors."""

from __future__ import annotations

from typing import Any, Final

REF: Final = "#/components/schemas/{name}"
SSE: Final = "text/event-stream"
JSON: Final = "application/json"

# Codes the service answers with, per status, and when (API.md, "Errors before a stream starts").
WHEN: Final[dict[str, str]] = {
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

REQUEST_ID_PARAM: Final = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Kept when 1-128 characters of [A-Za-z0-9._:-]; otherwise a fresh id is made.",
    "schema": {"type": "string"},
}
STREAM_ID_PARAM: Final = {
    "name": "stream_id",
    "in": "path",
    "required": True,
    "description": "The id from POST /chat/streams (or X-Stream-ID of POST /chat).",
    "schema": {"type": "string"},
}
CONVERSATION_ID_PARAM: Final = {
    "name": "conversation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
}
# What parse_last_event_id accepts: empty (from the start) or a small non-negative integer.
EVENT_ID: Final = "^[0-9]{0,12}$"
OPTIONAL_KEY: Final = [{}, {"bearer": []}]


def header(description: str, *, required: bool = False) -> dict[str, Any]:
    """A response header of type string."""
    return {"description": description, "required": required, "schema": {"type": "string"}}


HEADERS: Final = {
    "X-Request-ID": header("The correlation id (also in logs and events).", required=True),
    "X-Stream-ID": header("The run's stream id: a fetch client resumes at /chat/streams/{id}."),
    "Retry-After": header("Seconds to wait before retrying."),
    "Location": header("The stream's events_url.", required=True),
    "WWW-Authenticate": header("Bearer"),
}


def headers_of(*names: str) -> dict[str, Any]:
    """X-Request-ID (on every response) and the named headers."""
    return {name: HEADERS[name] for name in ("X-Request-ID", *names)}


def schema(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": REF.format(name=name)}


def errors(status: int, *codes: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A response with the error body, its codes and when each is sent."""
    lines = "; ".join(f"`{code}`: {WHEN[code]}" for code in codes)
    if status == 503:
        headers = ("Retry-After", *headers)
    if status == 401:
        headers = ("WWW-Authenticate", *headers)
    return {
        "description": lines,
        "headers": headers_of(*headers),
        "content": {JSON: {"schema": schema("ErrorBody")}},
    }


def json_reply(name: str, description: str, *headers: str) -> dict[str, Any]:
    """A JSON response whose body is the component ``name``."""
    return {
        "description": description,
        "headers": headers_of(*headers),
        "content": {JSON: {"schema": schema(name)}},
    }


def no_content(description: str) -> dict[str, Any]:
    """A response without a body."""
    return {"description": description, "headers": headers_of()}


def event_stream(description: str, *headers: str) -> dict[str, Any]:
    """A ``text/event-stream`` response of ``ChatEventFrame`` events."""
    return {
        "description": description,
        "headers": headers_of(*headers),
        "content": {SSE: {"schema": schema("ChatEventFrame")}},
    }


INTERNAL: Final = errors(500, "internal_error")
START_ERRORS: Final = {
    "400": errors(400, "invalid_json"),
    "401": errors(401, "unauthorized"),
    "404": errors(404, "not_found"),
    "409": errors(409, "conversation_busy", headers=("Retry-After",)),
    "413": errors(413, "payload_too_large"),
    "415": errors(415, "unsupported_media_type"),
    "422": errors(422, "invalid_request"),
    "500": INTERNAL,
    "503": errors(503, "overloaded", "shutting_down", "not_ready", "store_unavailable"),
}
STREAM_TEXT: Final = (
    "The answer as Server-Sent Events: `delta` events, then exactly one `done` or `error`. "
    "Each event has `event:` (its type), `id:` (1, 2, 3 ... within the stream) and one line "
    "of JSON `data:`, one of the `ChatEvent` union; `: ping` comments keep it open."
)
CHAT_BODY: Final = {
    "required": True,
    "content": {JSON: {"schema": schema("ChatRequest")}},
}
