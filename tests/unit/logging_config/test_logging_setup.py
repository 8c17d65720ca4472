"""configure_logging: what the real processor chain writes, for structlog and stdlib loggers."""

from __future__ import annotations

import io
import logging
import logging.config
import os
from typing import TYPE_CHECKING

import pytest
import structlog
import uvicorn

from logging_config import configure_logging, shared_processors

if TYPE_CHECKING:
    from conftest import LogBuffer

UPSTREAM_KEY = "sk-proj-CANARYkey0123456789abcdefABCDEF"
LOCAL_SECRET = "sk-proj-LOCALonlySECRET0123456789abcdef"


def _call_upstream() -> None:
    api_key = LOCAL_SECRET  # a local variable: must never reach a log line
    raise RuntimeError(f"upstream rejected {UPSTREAM_KEY} (key ending {api_key[-4:]})")


class TestJsonLines:
    def test_structlog_when_info_then_one_json_object_with_standard_fields(
        self, logs: LogBuffer
    ) -> None:
        logs.configure()
        structlog.get_logger("chat.test").info("started", backend="fake", max_streams=8)
        [record] = logs.records()
        assert record["event"] == "started"
        assert record["backend"] == "fake"
        assert record["max_streams"] == 8
        assert record["level"] == "info"
        assert record["logger"] == "chat.test"
        assert record["timestamp"].endswith("Z")
        assert "T" in record["timestamp"]

    def test_structlog_when_positional_args_then_message_formatted_and_redacted(
        self, logs: LogBuffer
    ) -> None:
        logs.configure()
        structlog.get_logger("t").info("key %s failed", UPSTREAM_KEY)
        assert [r["event"] for r in logs.records()] == ["key [REDACTED:openai_key] failed"]

    def test_structlog_when_context_bound_then_request_id_in_line(self, logs: LogBuffer) -> None:
        logs.configure()
        with structlog.contextvars.bound_contextvars(request_id="rid-1"):
            structlog.get_logger("t").info("inside")
            logging.getLogger("httpx").info("HTTP Request: POST /v1 200")
        assert [r["request_id"] for r in logs.records()] == ["rid-1", "rid-1"]

    def test_structlog_when_secrets_in_fields_then_redacted(self, logs: LogBuffer) -> None:
        logs.configure()
        structlog.get_logger("t").info(
            "call",
            headers={"Authorization": "Bearer abcdef", "accept": "*/*"},
            note=f"mail bob@example.com, card 4111-1111-1111-1111, key {UPSTREAM_KEY}",
            usage={"input_tokens": 9, "output_tokens": 2},
        )
        [record] = logs.records()
        assert record["headers"] == {"Authorization": "[REDACTED]", "accept": "*/*"}
        assert record["note"] == (
            "mail [REDACTED:email], card [REDACTED:card], key [REDACTED:openai_key]"
        )
        assert record["usage"] == {"input_tokens": 9, "output_tokens": 2}

    def test_structlog_when_content_logging_off_then_only_lengths(self, logs: LogBuffer) -> None:
        logs.configure(log_content=False)
        structlog.get_logger("t").info("request", message_text="hello there", input_chars=11)
        [record] = logs.records()
        assert record["message_text"] == "[11 chars]"
        assert record["input_chars"] == 11

    def test_structlog_when_content_logging_on_then_text_kept_but_secrets_redacted(
        self, logs: LogBuffer
    ) -> None:
        logs.configure(log_content=True)
        structlog.get_logger("t").info("request", message_text="hi, I am ann@example.com")
        assert logs.records()[0]["message_text"] == "hi, I am [REDACTED:email]"


class TestExceptions:
    def test_exception_when_message_and_local_hold_keys_then_neither_logged(
        self, logs: LogBuffer
    ) -> None:
        logs.configure()
        try:
            _call_upstream()
        except RuntimeError:
            structlog.get_logger("t").exception("upstream_failed")
        [line] = logs.lines
        assert UPSTREAM_KEY not in line
        assert LOCAL_SECRET not in line
        assert "locals" not in line
        [record] = logs.records()
        [exception] = record["exception"]
        assert exception["exc_type"] == "RuntimeError"
        assert exception["exc_value"].startswith("upstream rejected [REDACTED:openai_key]")
        assert exception["frames"][-1]["name"] == "_call_upstream"
        assert record["level"] == "error"

    def test_exception_when_stdlib_logger_then_same_redaction(self, logs: LogBuffer) -> None:
        logs.configure()
        try:
            _call_upstream()
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        [line] = logs.lines
        assert UPSTREAM_KEY not in line
        assert LOCAL_SECRET not in line
        assert logs.records()[0]["exception"][0]["exc_type"] == "RuntimeError"

    def test_exception_when_console_format_then_text_traceback_redacted(
        self, logs: LogBuffer
    ) -> None:
        logs.configure(fmt="console")
        try:
            _call_upstream()
        except RuntimeError:
            structlog.get_logger("t").exception("upstream_failed")
        assert "upstream_failed" in logs.text
        assert "Traceback (most recent call last)" in logs.text
        assert "RuntimeError: upstream rejected [REDACTED:openai_key]" in logs.text
        assert UPSTREAM_KEY not in logs.text
        assert LOCAL_SECRET not in logs.text


class TestStdlibRouting:
    def test_stdlib_when_uvicorn_error_logs_bearer_then_one_redacted_json_line(
        self, logs: LogBuffer
    ) -> None:
        logs.configure()
        logging.getLogger("uvicorn.error").info("header was Bearer abc123def456")
        [record] = logs.records()
        assert record["event"] == "header was Bearer [REDACTED:bearer]"
        assert record["logger"] == "uvicorn.error"
        assert record["level"] == "info"

    def test_stdlib_when_uvicorn_configured_logging_first_then_its_handlers_are_gone(
        self, logs: LogBuffer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        uvicorn.Config("app:app")  # what `uvicorn app:app` does before importing the app
        logs.configure()
        logging.getLogger("uvicorn.error").info("Started server process [1]")
        logging.getLogger("uvicorn.access").info('1.2.3.4 - "GET /chat?key=x HTTP/1.1" 200')
        assert [r["event"] for r in logs.records()] == ["Started server process [1]"]
        assert capsys.readouterr() == ("", "")
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            assert logging.getLogger(name).handlers == []
            assert logging.getLogger(name).propagate

    def test_stdlib_when_library_had_own_handler_then_no_duplicate_line(
        self, logs: LogBuffer
    ) -> None:
        elsewhere = io.StringIO()
        agents_logger = logging.getLogger("openai.agents")
        agents_logger.addHandler(logging.StreamHandler(elsewhere))
        agents_logger.propagate = False
        logs.configure()
        agents_logger.warning("tracing disabled")
        assert [r["event"] for r in logs.records()] == ["tracing disabled"]
        assert elsewhere.getvalue() == ""

    @pytest.mark.parametrize("name", ["sse_starlette.sse", "openai._base_client", "openai.agents"])
    def test_payload_logger_when_debug_and_content_off_then_debug_dropped(
        self, logs: LogBuffer, name: str
    ) -> None:
        logs.configure(level="debug")
        logging.getLogger(name).debug("chunk: %s", b"data: secret answer")
        logging.getLogger(name).info("kept")
        assert [r["event"] for r in logs.records()] == ["kept"]

    @pytest.mark.parametrize(
        "name",
        [
            "sse_starlette.sse",
            "openai._base_client",
            "openai.agents",
            "httpx",
            "httpx2",
            "httpcore.http11",
            "httpcore2.http11",
            "aiohttp.client",
            "asyncio",
        ],
    )
    def test_payload_logger_when_debug_and_content_on_then_debug_still_dropped(
        self, logs: LogBuffer, name: str
    ) -> None:
        # Content logging is for our own lines (whole texts, redacted as a whole), never a
        # library's frames: those split a secret into pieces the redactor cannot recognise.
        logs.configure(level="debug", log_content=True)
        logging.getLogger(name).debug("chunk: %s", b"data: half-of-a-secret")
        logging.getLogger(name).info("kept")
        assert [r["event"] for r in logs.records()] == ["kept"]

    def test_unknown_library_logger_when_debug_then_dropped_but_ours_kept(
        self, logs: LogBuffer
    ) -> None:
        logs.configure(level="debug", log_content=True)
        logging.getLogger("somelib.wire").debug("payload")
        logging.getLogger("chat.run.consumer").debug("ours, stdlib")
        logging.getLogger("uvicorn.error").debug("uvicorn")
        structlog.get_logger("anything").debug("ours, structlog")
        assert [r["event"] for r in logs.records()] == [
            "ours, stdlib",
            "uvicorn",
            "ours, structlog",
        ]


class TestLevels:
    def test_level_when_warning_then_info_dropped_for_structlog_and_stdlib(
        self, logs: LogBuffer
    ) -> None:
        logs.configure(level="warning")
        structlog.get_logger("t").info("quiet")
        logging.getLogger("uvicorn.error").info("quiet too")
        structlog.get_logger("t").warning("loud")
        logging.getLogger("httpx").error("louder")
        assert [(r["event"], r["level"]) for r in logs.records()] == [
            ("loud", "warning"),
            ("louder", "error"),
        ]

    def test_level_when_debug_then_debug_lines_written(self, logs: LogBuffer) -> None:
        logs.configure(level="DEBUG")
        structlog.get_logger("t").debug("detail")
        assert [r["level"] for r in logs.records()] == ["debug"]

    @pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "xml")])
    def test_configure_when_unknown_level_or_format_then_value_error(
        self, level: str, fmt: str
    ) -> None:
        with pytest.raises(ValueError, match="must be one of"):
            configure_logging(level=level, fmt=fmt, stream=io.StringIO())


class TestReconfiguring:
    def test_configure_when_called_twice_then_only_new_stream_and_one_handler(
        self, logs: LogBuffer
    ) -> None:
        first = io.StringIO()
        configure_logging(stream=first)
        logs.configure()
        structlog.get_logger("t").info("once")
        logging.getLogger("uvicorn.error").info("twice?")
        assert first.getvalue() == ""
        assert [r["event"] for r in logs.records()] == ["once", "twice?"]
        assert len(logging.getLogger().handlers) == 1

    def test_configure_when_content_off_then_sdk_data_flags_default_on(
        self, logs: LogBuffer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("OPENAI_AGENTS_DONT_LOG_MODEL_DATA", raising=False)
        monkeypatch.setenv("OPENAI_AGENTS_DONT_LOG_TOOL_DATA", "0")  # an operator's choice
        logs.configure(log_content=False)
        assert os.environ["OPENAI_AGENTS_DONT_LOG_MODEL_DATA"] == "1"
        assert os.environ["OPENAI_AGENTS_DONT_LOG_TOOL_DATA"] == "0"

    def test_configure_when_content_on_then_sdk_flags_untouched(
        self, logs: LogBuffer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("OPENAI_AGENTS_DONT_LOG_MODEL_DATA", raising=False)
        logs.configure(log_content=True)
        assert "OPENAI_AGENTS_DONT_LOG_MODEL_DATA" not in os.environ


class TestCaptureLogs:
    def test_capture_logs_when_given_shared_processors_then_sees_redacted_events(
        self, logs: LogBuffer
    ) -> None:
        logs.configure()
        with structlog.testing.capture_logs(processors=shared_processors()) as captured:
            structlog.get_logger("t").info("call", api_key="k", text="hello")
        [event] = captured
        assert event["api_key"] == "[REDACTED]"
        assert event["text"] == "[5 chars]"
        assert logs.lines == []
