"""Provider exceptions -> contract codes, whichever transport raised them."""

from __future__ import annotations

import itertools

import aiohttp
import httpx2
import openai
import pytest
from aiohttp.client_reqrep import ConnectionKey

from chat.run.upstream_errors import (
    UpstreamFailure,
    error_code_for,
    retry_after_of,
    retryable_status,
    upstream_failure,
)

REQUEST = httpx2.Request("POST", "http://upstream.test/v1/chat/completions")
KEY = ConnectionKey("upstream.test", 80, False, True, None, None, None)


def raised(outer: BaseException, *causes: BaseException) -> BaseException:
    """``outer`` raised ``from`` the first cause, which was raised from the next, and so on."""
    chain = [outer, *causes]
    for exc, cause in itertools.pairwise(chain):
        exc.__cause__ = cause
    return outer


def test_code_when_aiohttp_connection_refused_reported_as_timeout_then_unavailable() -> None:
    refused = aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused"))
    exc = raised(openai.APITimeoutError(REQUEST), httpx2.ConnectTimeout("x"), refused)
    assert error_code_for(exc) == "upstream_unavailable"


def test_code_when_aiohttp_server_disconnected_reported_as_timeout_then_unavailable() -> None:
    dropped = aiohttp.ServerDisconnectedError()
    exc = raised(openai.APITimeoutError(REQUEST), httpx2.ConnectTimeout("x"), dropped)
    assert error_code_for(exc) == "upstream_unavailable"


@pytest.mark.parametrize(
    "timeout",
    [aiohttp.SocketTimeoutError("read"), aiohttp.ConnectionTimeoutError("connect")],
)
def test_code_when_aiohttp_really_timed_out_then_timeout(timeout: BaseException) -> None:
    exc = raised(openai.APITimeoutError(REQUEST), httpx2.ReadTimeout("x"), timeout)
    assert error_code_for(exc) == "upstream_timeout"


def test_code_when_httpx_connect_error_then_unavailable() -> None:
    exc = raised(openai.APIConnectionError(request=REQUEST), httpx2.ConnectError("refused"))
    assert error_code_for(exc) == "upstream_unavailable"


def test_code_when_unrecognised_then_internal_error() -> None:
    assert error_code_for(raised(RuntimeError("x"), ValueError("y"))) == "internal_error"


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers, request=REQUEST)
    if status == 429:
        return openai.RateLimitError("sk-body", response=response, body=None)
    return openai.APIStatusError("sk-body", response=response, body=None)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (301, False),
        (308, False),
        (400, False),
        (401, False),
        (404, False),
        (422, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
    ],
)
def test_retryable_when_status_given_then_only_what_a_retry_can_get_past(
    status: int, retryable: bool
) -> None:
    assert retryable_status(status) is retryable


def test_failure_when_redirect_then_upstream_error_not_retryable() -> None:
    failure = upstream_failure(status_error(308, {"location": "http://elsewhere/v1"}))
    assert failure == UpstreamFailure("upstream_error", retryable=False)


def test_failure_when_rate_limited_with_retry_after_then_passed_on() -> None:
    failure = upstream_failure(status_error(429, {"retry-after": "7"}))
    assert failure == UpstreamFailure("upstream_rate_limited", retryable=True, retry_after="7")


def test_failure_when_not_a_status_error_then_code_default_retryable() -> None:
    failure = upstream_failure(openai.APIConnectionError(request=REQUEST))
    assert failure == UpstreamFailure("upstream_unavailable")


def test_failure_when_stream_bytes_not_utf8_then_upstream_error() -> None:
    exc = raised(RuntimeError("sdk"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"))
    assert upstream_failure(exc).code == "upstream_error"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, "7"),
        ({"retry-after": " 12 "}, "12"),
        ({"retry-after": "99999"}, "3600"),
        ({"retry-after-ms": "1500"}, "2"),
        ({"retry-after": "0", "retry-after-ms": "2500"}, "3"),
        ({"retry-after": "7", "retry-after-ms": "junk"}, "7"),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_when_headers_given_then_whole_seconds_or_none(
    headers: dict[str, str], expected: str | None
) -> None:
    assert retry_after_of(httpx2.Headers(headers)) == expected
