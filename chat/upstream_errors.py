"""Exceptions from the model provider, the SDK or the local runtime -> contract error codes."""

from __future__ import annotations

from typing import Final

import aiohttp
import httpx
import httpx2
import openai
from agents.exceptions import ModelBehaviorError

from chat.models.errors import ModelFailedError, ModelUnavailableError

_UNAVAILABLE_STATUSES: Final = frozenset({502, 503, 504, 529})


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
    return None
