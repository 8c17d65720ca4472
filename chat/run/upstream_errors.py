"""Exceptions from the model provider, the SDK or the local runtime -> contract error codes.

Besides the code: whether the same request may succeed later (a 3xx or most 4xx never will),
and the provider's ``Retry-After``, which the JSON-mode answer passes on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import aiohttp
import httpx
import httpx2
import msgspec
import openai
from agents.exceptions import ModelBehaviorError

from chat.models.errors import ModelFailedError, ModelUnavailableError

_UNAVAILABLE_STATUSES: Final = frozenset({502, 503, 504, 529})
# 4xx statuses a later retry of the same request may get past (the openai client retries them).
_RETRYABLE_CLIENT_STATUSES: Final = frozenset({408, 409, 429})
# A provider asking for longer than this is passed on as this: clients should come back sooner.
_MAX_RETRY_AFTER_S: Final = 3600


class UpstreamFailure(msgspec.Struct, frozen=True):
    """What a failed run tells its client: the code, ``retryable`` and a ``Retry-After``."""

    code: str
    retryable: bool | None = None  # None: the code's default (chat.errors)
    retry_after: str | None = None  # delta-seconds from the provider, when it sent them


def upstream_failure(exc: BaseException) -> UpstreamFailure:
    """The code of ``exc``, plus what the provider's HTTP status and headers add to it."""
    code = error_code_for(exc)
    status_error = next(
        (e for e in _chain(exc) if isinstance(e, openai.APIStatusError)),
        None,
    )
    if status_error is None:
        return UpstreamFailure(code)
    return UpstreamFailure(
        code,
        retryable=retryable_status(status_error.status_code),
        retry_after=retry_after_of(status_error.response.headers),
    )


def retryable_status(status: int) -> bool:
    """Whether the same request may succeed later: not after a redirect or most 4xx."""
    if 300 <= status < 400:
        return False  # we never follow redirects: the provider's URL is misconfigured
    if 400 <= status < 500:
        return status in _RETRYABLE_CLIENT_STATUSES
    return True


def retry_after_of(headers: Mapping[str, str]) -> str | None:
    """The provider's wait in whole seconds, rounded up.

    OpenAI's ``retry-after-ms`` first (the more precise; the openai client prefers it too), then
    the standard ``Retry-After`` in seconds. None when absent or an HTTP date: the caller's
    default applies.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            milliseconds = float(raw_ms)
        except ValueError:
            milliseconds = math.nan
        if math.isfinite(milliseconds) and milliseconds >= 0:
            return str(min(math.ceil(milliseconds / 1000), _MAX_RETRY_AFTER_S))
    raw = (headers.get("retry-after") or "").strip()
    if raw.isascii() and raw.isdigit():
        return str(min(int(raw), _MAX_RETRY_AFTER_S))
    return None


def error_code_for(exc: BaseException) -> str:
    """The code of the first recognised exception in the chain (cause, then context)."""
    chain = _chain(exc)
    for current in chain:
        code = _code_of(current)
        if code is not None:
            if code == "upstream_timeout" and any(map(_is_aiohttp_connection_failure, chain)):
                # The client's aiohttp transport reports a refused or dropped connection as
                # httpx ConnectTimeout (so the client raises APITimeoutError); nothing timed out.
                return "upstream_unavailable"
            return code
    return "internal_error"


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_aiohttp_connection_failure(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(exc, TimeoutError)


def _code_of(exc: BaseException) -> str | None:
    if isinstance(exc, ModelUnavailableError):
        return "upstream_unavailable"
    if isinstance(exc, ModelFailedError):
        return "upstream_error"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "upstream_auth"
    if isinstance(exc, openai.RateLimitError):
        return "upstream_rate_limited"
    if isinstance(
        exc,
        openai.APITimeoutError | TimeoutError | httpx.TimeoutException | httpx2.TimeoutException,
    ):
        return "upstream_timeout"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in _UNAVAILABLE_STATUSES:
            return "upstream_unavailable"
        if exc.status_code == 408:
            return "upstream_timeout"
        return "upstream_error"
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | httpx2.TransportError):
        return "upstream_unavailable"
    if isinstance(exc, openai.APIError | ModelBehaviorError):
        return "upstream_error"
    if isinstance(exc, UnicodeDecodeError):
        # Only the provider's stream is decoded during a run (the request body was decoded
        # before it started): the stock client's SSE decoder raises this on bytes not UTF-8.
        return "upstream_error"
    return None
