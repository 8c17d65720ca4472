"""CorrelationIdMiddleware driven directly with dict scopes and hand-written receive/send."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from starlette.types import Receive, Scope, Send

from logging_config.correlation import (
    CorrelationIdMiddleware,
    get_request_id,
    is_valid_request_id,
    new_request_id,
    request_id_from_headers,
    request_id_var,
)

if TYPE_CHECKING:
    from conftest import LogBuffer, Sent

pytestmark = pytest.mark.anyio

HEADER = b"x-request-id"
FRESH_ID = re.compile(r"[0-9a-f]{32}")
SECRET = "sk-proj-SECRETinEXCEPTION0123456789abcdef"


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def status_app(status: int) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError(f"upstream said {SECRET}")


class TestIsValidRequestId:
    @pytest.mark.parametrize(
        "value",
        ["a", "abc-123", "4f1c9a7e2b6d4c1e8f0a9b3c2d1e0f7a", "req.1:2_3-4", "A" * 128],
    )
    def test_is_valid_when_allowed_characters_and_length_then_true(self, value: str) -> None:
        assert is_valid_request_id(value)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "A" * 129,
            "abc\n",
            "abc\r\nx-injected: 1",
            "a\x00b",
            "a b",
            "a;b",
            "a/b",
            "a\tb",
            "ünïcode",
            "id=1",
            '"quoted"',
        ],
    )
    def test_is_valid_when_empty_too_long_or_bad_characters_then_false(self, value: str) -> None:
        assert not is_valid_request_id(value)

    def test_new_request_id_when_called_then_32_hex_and_valid_and_unique(self) -> None:
        ids = {new_request_id() for _ in range(100)}
        assert len(ids) == 100
        assert all(FRESH_ID.fullmatch(i) and is_valid_request_id(i) for i in ids)


class TestRequestIdFromHeaders:
    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ([(b"x-request-id", b"abc")], "abc"),
            ([(b"X-Request-ID", b"abc")], "abc"),
            ([(b"accept", b"*/*"), (b"x-request-id", b"first"), (b"x-request-id", b"2")], "first"),
            ([(b"x-request-id", b"bad id"), (b"x-request-id", b"good")], None),
            ([(b"x-request-id", "é".encode("latin-1"))], None),
            ([(b"x-request-id", b"")], None),
            ([], None),
        ],
    )
    def test_request_id_from_headers_when_headers_then_first_valid_or_none(
        self, headers: list[tuple[bytes, bytes]], expected: str | None
    ) -> None:
        assert request_id_from_headers(headers) == expected


class TestCorrelationIdMiddleware:
    async def test_middleware_when_valid_id_then_kept_and_echoed(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent
    ) -> None:
        scope = http_scope(headers=[(HEADER, b"client-id-1")])
        await CorrelationIdMiddleware(ok_app)(scope, asgi_receive, sent)
        assert sent.header_values(HEADER) == [b"client-id-1"]
        assert scope["state"]["request_id"] == "client-id-1"

    @pytest.mark.parametrize(
        "value",
        [b"A" * 129, b"", b"abc\n", b"a\x00b", b"a b", "ünï".encode(), b"a;b"],
        ids=["129_chars", "empty", "newline", "nul", "space", "unicode", "semicolon"],
    )
    async def test_middleware_when_invalid_id_then_fresh_valid_id(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, value: bytes
    ) -> None:
        await CorrelationIdMiddleware(ok_app)(
            http_scope(headers=[(HEADER, value)]), asgi_receive, sent
        )
        [echoed] = sent.header_values(HEADER)
        assert FRESH_ID.fullmatch(echoed.decode())

    async def test_middleware_when_no_id_then_fresh_id_per_request(
        self,
        http_scope: Callable[..., Scope],
        asgi_receive: Receive,
        new_sent: Callable[[], Sent],
    ) -> None:
        middleware = CorrelationIdMiddleware(ok_app)
        echoed = []
        for _ in range(2):
            send = new_sent()
            await middleware(http_scope(), asgi_receive, send)
            [value] = send.header_values(HEADER)
            echoed.append(value.decode())
        assert all(FRESH_ID.fullmatch(e) for e in echoed)
        assert echoed[0] != echoed[1]

    @pytest.mark.parametrize("status", [200, 204, 404, 405, 413, 503])
    async def test_middleware_when_any_status_then_header_echoed(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, status: int
    ) -> None:
        scope = http_scope(headers=[(HEADER, b"rid")])
        await CorrelationIdMiddleware(status_app(status))(scope, asgi_receive, sent)
        assert sent.status == status
        assert sent.header_values(HEADER) == [b"rid"]

    async def test_middleware_when_app_sets_its_own_id_header_then_replaced_not_doubled(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent
    ) -> None:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            headers = [(b"X-Request-ID", b"other"), (b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})

        scope = http_scope(headers=[(HEADER, b"rid")])
        await CorrelationIdMiddleware(app)(scope, asgi_receive, sent)
        assert [v for k, v in sent.start["headers"] if k.lower() == HEADER] == [b"rid"]
        assert (b"content-type", b"text/plain") in sent.start["headers"]

    async def test_middleware_when_streaming_then_header_once_and_id_visible_throughout(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent
    ) -> None:
        seen: list[object] = []

        async def stream_app(scope: Scope, receive: Receive, send: Send) -> None:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for n in range(3):
                seen.append((get_request_id(), structlog.contextvars.get_contextvars()))
                body = f"event: delta\nid: {n}\ndata: {{}}\n\n".encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        scope = http_scope(headers=[(HEADER, b"stream-1")])
        await CorrelationIdMiddleware(stream_app)(scope, asgi_receive, sent)
        assert sent.header_values(HEADER) == [b"stream-1"]
        assert len(sent.messages) == 5
        assert seen == [("stream-1", {"request_id": "stream-1"})] * 3

    async def test_middleware_when_request_done_then_contextvars_reset(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent
    ) -> None:
        outer = request_id_var.set("outer")
        try:
            await CorrelationIdMiddleware(ok_app)(http_scope(), asgi_receive, sent)
            assert get_request_id() == "outer"
        finally:
            request_id_var.reset(outer)
        assert get_request_id() is None
        assert structlog.contextvars.get_contextvars() == {}

    async def test_middleware_when_state_shared_then_copied_not_mutated(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent
    ) -> None:
        lifespan_state = {"chat": object()}
        scope = http_scope(state=lifespan_state)
        await CorrelationIdMiddleware(ok_app)(scope, asgi_receive, sent)
        assert "request_id" not in lifespan_state
        assert scope["state"]["chat"] is lifespan_state["chat"]
        assert is_valid_request_id(scope["state"]["request_id"])

    async def test_middleware_when_exception_before_start_then_500_json_and_one_log_line(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        logs.configure()
        scope = http_scope(headers=[(HEADER, b"rid-500")])
        await CorrelationIdMiddleware(failing_app)(scope, asgi_receive, sent)

        assert sent.status == 500
        assert sent.header_values(HEADER) == [b"rid-500"]
        assert sent.header_values(b"content-type") == [b"application/json"]
        assert sent.header_values(b"content-length") == [str(len(sent.body)).encode()]
        assert json.loads(sent.body) == {
            "error": {
                "code": "internal_error",
                "message": "Internal server error.",
                "request_id": "rid-500",
            }
        }
        [record] = logs.records()
        assert record["event"] == "unhandled_error"
        assert record["level"] == "error"
        assert record["request_id"] == "rid-500"
        assert record["path"] == "/chat"
        assert record["exception"][0]["exc_type"] == "RuntimeError"
        assert SECRET not in logs.text

    async def test_middleware_when_exception_after_start_then_logged_and_reraised(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise RuntimeError("mid-stream")

        logs.configure()
        with pytest.raises(RuntimeError, match="mid-stream"):
            await CorrelationIdMiddleware(app)(http_scope(), asgi_receive, sent)
        assert sent.status == 200
        assert len(sent.messages) == 1
        assert [r["event"] for r in logs.records()] == ["unhandled_error"]
        assert get_request_id() is None

    async def test_middleware_when_cancelled_then_propagates_without_500(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            raise asyncio.CancelledError

        logs.configure()
        with pytest.raises(asyncio.CancelledError):
            await CorrelationIdMiddleware(app)(http_scope(), asgi_receive, sent)
        assert sent.messages == []
        assert logs.lines == []
        assert get_request_id() is None

    @pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
    async def test_middleware_when_not_http_then_passed_through_untouched(
        self, asgi_receive: Receive, sent: Sent, scope_type: str
    ) -> None:
        seen: list[Scope] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(dict(scope))
            assert get_request_id() is None

        scope: Scope = {"type": scope_type, "state": {}}
        await CorrelationIdMiddleware(app)(scope, asgi_receive, sent)
        assert seen == [{"type": scope_type, "state": {}}]
