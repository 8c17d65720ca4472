"""AccessLogMiddleware and its pure helpers, driven with dict scopes and hand-written send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from starlette.types import Receive, Scope, Send

from logging_config.access import (
    ACCESS_STATE_KEY,
    AccessLogMiddleware,
    access_fields,
    access_level,
    elapsed_ms,
    response_status,
)
from logging_config.correlation import CorrelationIdMiddleware

if TYPE_CHECKING:
    from conftest import LogBuffer, Sent

pytestmark = pytest.mark.anyio


def fake_clock(*readings: float) -> Callable[[], float]:
    """A monotonic clock that returns the given readings, so durations need no sleeping."""
    values: Iterator[float] = iter(readings)
    return lambda: next(values)


def app_with_status(status: int) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Like the chat endpoint: fills the access record while and after it streams."""
    record = scope["state"][ACCESS_STATE_KEY]
    record["input_chars"] = 5
    record["backend"] = "fake"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for text in ("Hel", "lo"):
        await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    record.update(
        ttft_ms=1.5, deltas=2, output_chars=5, outcome="done", upstream_request_id="req_1"
    )


class TestHelpers:
    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [(10.0, 10.0, 0.0), (1.0, 1.234567, 234.57), (0.5, 2.0, 1500.0), (3.0, 3.000004, 0.0)],
    )
    def test_elapsed_ms_when_two_readings_then_milliseconds_two_decimals(
        self, start: float, end: float, expected: float
    ) -> None:
        assert elapsed_ms(start, end) == expected

    @pytest.mark.parametrize(
        ("status", "outcome", "expected"),
        [
            (200, "done", "info"),
            (None, "client_disconnected", "info"),
            (422, "invalid_request", "info"),
            (503, "overloaded", "warning"),
            (503, "store_unavailable", "error"),
            (500, "internal_error", "error"),
            (500, None, "error"),
        ],
    )
    def test_access_level_when_status_and_outcome_then_level(
        self, status: int | None, outcome: str | None, expected: str
    ) -> None:
        assert access_level(status, outcome, frozenset({"overloaded"})) == expected

    @pytest.mark.parametrize(
        ("status", "raised", "expected"),
        [
            (200, False, 200),
            (404, False, 404),
            (None, False, None),
            (None, True, 500),
            (200, True, 500),
        ],
    )
    def test_response_status_when_outcome_then_status_to_log(
        self, status: int | None, raised: bool, expected: int | None
    ) -> None:
        assert response_status(status, raised) == expected

    def test_access_fields_when_record_then_request_fields_first_and_record_added(
        self, http_scope: Callable[..., Scope]
    ) -> None:
        scope = http_scope("/chat", query_string=b"key=sk-secret")
        fields = access_fields(scope, 200, 12.5, {"ttft_ms": 3.0, "outcome": "done"})
        assert fields == {
            "method": "POST",
            "path": "/chat",
            "status": 200,
            "duration_ms": 12.5,
            "client": "203.0.113.7",
            "ttft_ms": 3.0,
            "outcome": "done",
        }
        assert list(fields)[:4] == ["method", "path", "status", "duration_ms"]

    def test_access_fields_when_record_names_own_fields_then_ours_win(
        self, http_scope: Callable[..., Scope]
    ) -> None:
        record = {"status": 999, "path": "/x", "event": "nope", "deltas": 1}
        fields = access_fields(http_scope(), 200, 1.0, record, log_client=False)
        assert fields == {
            "method": "POST",
            "path": "/chat",
            "status": 200,
            "duration_ms": 1.0,
            "deltas": 1,
        }

    @pytest.mark.parametrize(
        ("status", "raised", "record", "outcome"),
        [
            (None, False, {}, "client_disconnected"),
            (500, True, {}, "internal_error"),
            (None, False, {"outcome": "upstream_timeout"}, "upstream_timeout"),
            (200, False, {}, None),
        ],
    )
    def test_access_fields_when_no_outcome_recorded_then_default_from_how_it_ended(
        self,
        http_scope: Callable[..., Scope],
        status: int | None,
        raised: bool,
        record: dict[str, object],
        outcome: str | None,
    ) -> None:
        fields = access_fields(http_scope(), status, 1.0, record, raised=raised)
        assert fields.get("outcome") == outcome


class TestAccessLogMiddleware:
    async def test_access_when_plain_response_then_one_info_line_with_fields(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        logs.configure()
        middleware = AccessLogMiddleware(app_with_status(201), clock=fake_clock(1.0, 1.0425))
        await middleware(http_scope("/healthz", method="GET"), asgi_receive, sent)
        [record] = logs.records()
        assert record["event"] == "request"
        assert record["level"] == "info"
        assert record["logger"] == "logging_config.access"
        assert (record["method"], record["path"], record["status"]) == ("GET", "/healthz", 201)
        assert record["duration_ms"] == 42.5
        assert record["client"] == "203.0.113.7"

    async def test_access_when_query_string_has_secret_then_path_only(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        logs.configure()
        scope = http_scope("/chat", query_string=b"api_key=hunter2")
        await AccessLogMiddleware(app_with_status(200))(scope, asgi_receive, sent)
        assert logs.records()[0]["path"] == "/chat"
        assert "hunter2" not in logs.text

    async def test_access_when_streaming_endpoint_fills_record_then_fields_in_line(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        logs.configure()
        await AccessLogMiddleware(streaming_app)(http_scope(), asgi_receive, sent)
        [record] = logs.records()
        assert {k: record[k] for k in ("status", "input_chars", "backend", "ttft_ms")} == {
            "status": 200,
            "input_chars": 5,
            "backend": "fake",
            "ttft_ms": 1.5,
        }
        assert (record["deltas"], record["output_chars"], record["outcome"]) == (2, 5, "done")
        assert record["upstream_request_id"] == "req_1"
        assert isinstance(record["duration_ms"], float)
        assert record["duration_ms"] >= 0

    async def test_access_when_inside_correlation_then_request_id_in_line(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        logs.configure()
        app = CorrelationIdMiddleware(AccessLogMiddleware(app_with_status(404)))
        await app(http_scope(headers=[(b"x-request-id", b"rid-9")]), asgi_receive, sent)
        [record] = logs.records()
        assert (record["request_id"], record["status"]) == ("rid-9", 404)

    @pytest.mark.parametrize("status", [500, 503])
    async def test_access_when_server_error_status_then_error_level(
        self,
        http_scope: Callable[..., Scope],
        asgi_receive: Receive,
        sent: Sent,
        logs: LogBuffer,
        status: int,
    ) -> None:
        logs.configure()
        await AccessLogMiddleware(app_with_status(status))(http_scope(), asgi_receive, sent)
        assert [(r["status"], r["level"]) for r in logs.records()] == [(status, "error")]

    @pytest.mark.parametrize(
        ("outcome", "level"), [("overloaded", "warning"), ("store_unavailable", "error")]
    )
    async def test_access_when_503_then_shed_outcomes_warning_others_error(
        self,
        http_scope: Callable[..., Scope],
        asgi_receive: Receive,
        sent: Sent,
        logs: LogBuffer,
        outcome: str,
        level: str,
    ) -> None:
        async def refusing(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"][ACCESS_STATE_KEY]["outcome"] = outcome
            await app_with_status(503)(scope, receive, send)

        logs.configure()
        middleware = AccessLogMiddleware(refusing, shed_outcomes=frozenset({"overloaded"}))
        await middleware(http_scope(), asgi_receive, sent)
        assert [(r["outcome"], r["level"]) for r in logs.records()] == [(outcome, level)]

    async def test_access_when_app_raises_inside_correlation_then_500_logged_and_answered(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        async def failing(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"][ACCESS_STATE_KEY]["backend"] = "fake"
            raise RuntimeError("boom")

        logs.configure()
        app = CorrelationIdMiddleware(AccessLogMiddleware(failing))
        await app(http_scope(headers=[(b"x-request-id", b"rid-5")]), asgi_receive, sent)
        assert sent.status == 500
        access, error = logs.records()
        assert (access["event"], access["status"], access["level"]) == ("request", 500, "error")
        assert (access["outcome"], access["backend"], access["request_id"]) == (
            "internal_error",
            "fake",
            "rid-5",
        )
        assert (error["event"], error["request_id"]) == ("unhandled_error", "rid-5")

    async def test_access_when_app_raises_alone_then_logged_and_reraised(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        async def failing(scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("boom")

        logs.configure()
        with pytest.raises(RuntimeError):
            await AccessLogMiddleware(failing)(http_scope(), asgi_receive, sent)
        assert [r["status"] for r in logs.records()] == [500]

    async def test_access_when_no_response_started_then_status_none_client_disconnected(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        async def gone(scope: Scope, receive: Receive, send: Send) -> None:
            assert (await receive())["type"] == "http.request"

        logs.configure()
        await AccessLogMiddleware(gone)(http_scope(), asgi_receive, sent)
        [record] = logs.records()
        assert (record["status"], record["outcome"], record["level"]) == (
            None,
            "client_disconnected",
            "info",
        )

    async def test_access_when_cancelled_then_logged_and_cancellation_propagates(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise asyncio.CancelledError

        logs.configure()
        with pytest.raises(asyncio.CancelledError):
            await AccessLogMiddleware(cancelled)(http_scope(), asgi_receive, sent)
        [record] = logs.records()
        assert (record["status"], record["outcome"]) == (200, "cancelled")

    async def test_access_when_log_client_off_then_no_client_field(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        logs.configure()
        middleware = AccessLogMiddleware(app_with_status(200), log_client=False)
        await middleware(http_scope(), asgi_receive, sent)
        assert "client" not in logs.records()[0]

    async def test_access_when_content_recorded_then_only_its_length_logged(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        async def chat(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"][ACCESS_STATE_KEY]["message_text"] = "my card is 4111 1111 1111 1111"
            await app_with_status(200)(scope, receive, send)

        logs.configure()
        await AccessLogMiddleware(chat)(http_scope(), asgi_receive, sent)
        assert logs.records()[0]["message_text"] == "[30 chars]"

    async def test_access_when_state_shared_then_record_not_written_into_it(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        logs.configure()
        lifespan_state: dict[str, Any] = {"chat": "shared"}
        scope = http_scope(state=lifespan_state)
        await AccessLogMiddleware(streaming_app)(scope, asgi_receive, sent)
        assert lifespan_state == {"chat": "shared"}
        assert scope["state"]["chat"] == "shared"

    async def test_access_when_not_http_then_passed_through_without_line(
        self, asgi_receive: Receive, sent: Sent, logs: LogBuffer
    ) -> None:
        calls: list[str] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            calls.append(scope["type"])

        logs.configure()
        await AccessLogMiddleware(app)({"type": "lifespan"}, asgi_receive, sent)
        assert calls == ["lifespan"]
        assert logs.lines == []


class TestFinishHook:
    async def test_hook_when_streaming_response_ends_then_called_once_after_the_last_chunk(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent
    ) -> None:
        calls: list[tuple[int | None, dict[str, object]]] = []

        def hook(scope: Scope, status: int | None, record: Any) -> None:
            calls.append((status, dict(record)))

        await AccessLogMiddleware(streaming_app, on_finish=hook)(http_scope(), asgi_receive, sent)
        [(status, record)] = calls
        assert status == 200
        assert record["outcome"] == "done"  # written after the stream: the hook sees it

    async def test_hook_when_app_raises_then_called_with_500(
        self, http_scope: Callable[..., Scope], asgi_receive: Receive, sent: Sent
    ) -> None:
        statuses: list[int | None] = []

        async def failing(scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("boom")

        middleware = AccessLogMiddleware(failing, on_finish=lambda s, st, r: statuses.append(st))
        with pytest.raises(RuntimeError):
            await middleware(http_scope(), asgi_receive, sent)
        assert statuses == [500]
