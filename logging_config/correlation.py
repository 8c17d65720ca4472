"""A request id for every HTTP request: kept from the client when sane, logged, echoed back."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat.bodies import error_body

__all__ = [
    "REQUEST_ID_HEADER",
    "CorrelationIdMiddleware",
    "get_request_id",
    "is_valid_request_id",
    "new_request_id",
    "request_id_from_headers",
    "request_id_var",
]

REQUEST_ID_HEADER: Final = b"x-request-id"

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_log = structlog.stdlib.get_logger(__name__)

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def is_valid_request_id(value: str) -> bool:
    """Whether a client's id is 1-128 characters of ``[A-Za-z0-9._:-]``."""
    # fullmatch: `$` would let a trailing newline through into log lines and headers.
    return _VALID_REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """A fresh id: 32 random hex characters."""
    return secrets.token_hex(16)


def request_id_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The first ``X-Request-ID`` header if it is valid, else None (one header, not a search)."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER:
            # Headers arrive as latin-1 bytes; anything outside ASCII then fails validation.
            decoded = value.decode("latin-1")
            return decoded if is_valid_request_id(decoded) else None
    return None


def get_request_id() -> str | None:
    """The current request's id, or None outside a request."""
    return request_id_var.get()


class CorrelationIdMiddleware:
    """Give each HTTP request an id in logs, ``scope["state"]`` and the response header.

    Also the last line of defence: an exception that escapes before the response started is
    logged once and answered with a 500 JSON error carrying the id, never with a traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = request_id_from_headers(scope.get("headers", ())) or new_request_id()
        header_value = request_id.encode("ascii")
        # A copy: a server may hand every request the same (lifespan) state dict; uvicorn
        # 0.54 copies it per request, but a request id must never leak into a shared one.
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, header_value))
                message = {**message, "headers": headers}
            await send(message)

        token = request_id_var.set(request_id)
        # Tokens, not bound_contextvars(): that one copies the whole context to save what it
        # overwrites; resetting the token restores the same, per request.
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            _log.exception("unhandled_error", method=scope.get("method"), path=scope.get("path"))
            if response_started:
                raise  # the server must cut the half-sent response off
            await self._send_error(send, header_value, request_id)
        finally:
            structlog.contextvars.reset_contextvars(**bound)
            request_id_var.reset(token)

    @staticmethod
    async def _send_error(send: Send, header_value: bytes, request_id: str) -> None:
        body = error_body("internal_error", request_id)
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (REQUEST_ID_HEADER, header_value),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
