"""Error codes of the contract: their HTTP status, whether a retry may help, and safe messages.

Messages here are written for people and never carry upstream bodies, keys, URLs or tracebacks.
"""

from __future__ import annotations

from typing import Final

import msgspec


class ErrorSpec(msgspec.Struct, frozen=True):
    """What a code means to a client."""

    status: int
    message: str
    retryable: bool


# Errors answered before a stream starts (JSON body) and codes inside a stream (`error` event).
ERRORS: Final[dict[str, ErrorSpec]] = {
    "invalid_json": ErrorSpec(400, "The request body is not valid JSON.", False),
    "unauthorized": ErrorSpec(401, "A valid bearer token is required.", False),
    "not_found": ErrorSpec(404, "Not found.", False),
    "method_not_allowed": ErrorSpec(405, "Method not allowed.", False),
    "payload_too_large": ErrorSpec(413, "The request body is too large.", False),
    "unsupported_media_type": ErrorSpec(415, "Content-Type must be application/json.", False),
    "invalid_request": ErrorSpec(422, "The request body has the wrong shape.", False),
    "conversation_busy": ErrorSpec(
        409, "Another message of this conversation is still being answered.", True
    ),
    "overloaded": ErrorSpec(503, "The server is busy; retry shortly.", True),
    "shutting_down": ErrorSpec(503, "The server is shutting down; retry shortly.", True),
    "not_ready": ErrorSpec(503, "The model is not loaded yet; retry shortly.", True),
    "store_unavailable": ErrorSpec(503, "A data store is unavailable; retry shortly.", True),
    "upstream_auth": ErrorSpec(502, "The model provider rejected our credentials.", False),
    "upstream_rate_limited": ErrorSpec(503, "The model provider is rate limiting us.", True),
    "upstream_timeout": ErrorSpec(504, "The model did not answer in time.", True),
    "upstream_unavailable": ErrorSpec(503, "The model provider is unavailable.", True),
    "upstream_error": ErrorSpec(502, "The model provider returned an error.", True),
    "cancelled": ErrorSpec(409, "The stream was cancelled.", False),
    "internal_error": ErrorSpec(500, "Internal server error.", True),
}

# 503s answered by design, not by a failure: load shedding, a drain, a model still loading.
# The access log writes them at warning, so an alert on error lines does not fire on each one.
CHOSEN_REFUSALS: Final = frozenset({"overloaded", "shutting_down", "not_ready"})


def spec_for(code: str) -> ErrorSpec:
    """The spec of a known code; unknown codes are treated as internal errors."""
    return ERRORS.get(code, ERRORS["internal_error"])


class ChatError(Exception):
    """An error with a contract code, raised anywhere and turned into a response at the edge."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        spec = spec_for(code)
        self.code = code
        self.message = message or spec.message
        self.status = spec.status
        self.retryable = spec.retryable
        self.headers = headers or {}
        self.details = details
        super().__init__(f"{code}: {self.message}")
