"""Fixtures for the logging tests: global logging state put back after each test, ASGI helpers."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from starlette.types import Message, Scope

from logging_config import configure_logging

# Loggers configure_logging touches (root aside), so each test leaves them as it found them.
_TOUCHED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "aiohttp",
    "asyncio",
    "hpack",
    "openai",
    "openai.agents",
    "sse_starlette",
    "sse_starlette.sse",
)
_TOUCHED_ENV = ("OPENAI_AGENTS_DONT_LOG_MODEL_DATA", "OPENAI_AGENTS_DONT_LOG_TOOL_DATA")


def _is_pytest_handler(handler: logging.Handler) -> bool:
    # pytest adds and removes its capture handlers per test phase by itself.
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; undo it so other tests see none of it."""
    root = logging.getLogger()
    root_handlers = [h for h in root.handlers if not _is_pytest_handler(h)]
    root_level = root.level
    loggers = [logging.getLogger(name) for name in _TOUCHED_LOGGERS]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    structlog_was_configured = structlog.is_configured()
    structlog_config = structlog.get_config()
    env = {name: os.environ.get(name) for name in _TOUCHED_ENV}
    yield
    kept = [h for h in root.handlers if h.get_name() != "logging_config"]
    root.handlers[:] = kept + [h for h in root_handlers if h not in kept]
    root.setLevel(root_level)
    for logger, handlers, level, propagate, disabled in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled
    structlog.reset_defaults()
    if structlog_was_configured:
        structlog.configure(**structlog_config)
    structlog.contextvars.clear_contextvars()
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class LogBuffer:
    """The real logging configuration, writing to a StringIO instead of stdout."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def configure(self, **kwargs: Any) -> LogBuffer:
        configure_logging(stream=self.stream, **kwargs)
        return self

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def logs() -> LogBuffer:
    """Call ``logs.configure(...)`` to log through the real chain into ``logs.records()``."""
    return LogBuffer()


class Sent:
    """A hand-written ASGI ``send`` that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def start(self) -> Message:
        (start,) = [m for m in self.messages if m["type"] == "http.response.start"]
        return start

    @property
    def status(self) -> int:
        return int(self.start["status"])

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.start["headers"] if key.lower() == name]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"].endswith("body"))


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def new_sent() -> Callable[[], Sent]:
    """For tests that make several requests, each with its own ``send``."""
    return Sent


async def receive() -> Message:
    """One empty request body; the tests' apps never read further."""
    return {"type": "http.request", "body": b"", "more_body": False}


@pytest.fixture
def http_scope() -> Callable[..., Scope]:
    """A factory of minimal HTTP scopes, as uvicorn would pass them."""

    def make(
        path: str = "/chat",
        *,
        method: str = "POST",
        headers: list[tuple[bytes, bytes]] | None = None,
        query_string: bytes = b"",
        state: dict[str, Any] | None = None,
    ) -> Scope:
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query_string,
            "root_path": "",
            "headers": headers or [],
            "client": ("203.0.113.7", 51234),
            "server": ("127.0.0.1", 8000),
        }
        if state is not None:
            scope["state"] = state
        return scope

    return make


@pytest.fixture
def asgi_receive() -> Callable[[], Any]:
    """An ASGI ``receive`` giving one empty body."""
    return receive
