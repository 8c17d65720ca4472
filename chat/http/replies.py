"""JSON error replies with the contract's bodies and statuses."""

from __future__ import annotations

from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from chat.bodies import error_body
from chat.errors import ChatError, spec_for
from chat.http.checks import JSON_TYPE
from chat.http.scope import request_id_of

# The challenge a bearer-token client expects with every 401.
BEARER_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}
# Seconds a client is asked to wait while the stream store is away (the health probe's period).
STORE_RETRY_AFTER: Final = "1"


def error_response(
    code: str,
    request_id: str,
    *,
    message: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
    status: int | None = None,
) -> Response:
    """A JSON error response for a contract code."""
    return Response(
        error_body(code, request_id, message, details),
        status_code=status or spec_for(code).status,
        media_type=JSON_TYPE,
        headers=headers,
    )


def chat_error_response(exc: ChatError, request_id: str) -> Response:
    """The reply for a contract error raised below the HTTP layer."""
    return error_response(
        exc.code, request_id, message=exc.message, details=exc.details, headers=exc.headers
    )


def store_unavailable_response(request_id: str, headers: dict[str, str] | None = None) -> Response:
    """503 ``store_unavailable``: Redis cannot be reached; it heals by itself."""
    return error_response(
        "store_unavailable",
        request_id,
        headers={**(headers or {}), "Retry-After": STORE_RETRY_AFTER},
    )


def unauthorized_response(request_id: str) -> Response:
    """401 with the challenge a bearer-token client expects."""
    return error_response("unauthorized", request_id, headers=BEARER_CHALLENGE)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 (and other HTTPExceptions) as contract JSON."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return error_response(
        code, request_id_of(request), headers=dict(exc.headers or {}), status=exc.status_code
    )
