"""Provider exceptions -> contract codes, whichever transport raised them."""

from __future__ import annotations

import itertools

import aiohttp
import httpx2
import openai
import pytest
from aiohttp.client_reqrep import ConnectionKey

from chat.upstream_errors import error_code_for

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
