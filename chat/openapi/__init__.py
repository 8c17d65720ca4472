"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, built from the msgspec Structs.

The request, the stream events and every JSON body come from the same Structs that decode and
encode them (``msgspec.json.schema_components``, ``components.py``); only the routes, their
statuses and headers are written by hand (``chat_paths.py``, ``service_paths.py``, with the
pieces in ``parts.py``). The SSE response is ``text/event-stream``; its schema is one event
(``ChatEventFrame``, as OpenAPI 3.1 reads streams), whose ``data:`` holds a ``ChatEvent`` in JSON.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec

from chat.openapi.chat_paths import chat_paths
from chat.openapi.components import components
from chat.openapi.service_paths import service_paths

OPENAPI_VERSION: Final = "3.1.0"
API_VERSION: Final = "1"


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
        "paths": {**chat_paths(), **service_paths()},
        "components": components(),
    }


@functools.cache
def document_bytes() -> bytes:
    """``document()`` as JSON, encoded once."""
    return msgspec.json.encode(document())
