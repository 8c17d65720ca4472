"""Configure structlog and stdlib logging once: one redacted JSON (or console) line per event."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Final, TextIO

import msgspec
import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor

from chat.seams import is_structlog_record
from logging_config.dropped_readers import DroppedReaderFilter
from logging_config.redaction import (
    ContentRedactor,
    redact_secret_values,
    redact_sensitive_keys,
)

__all__ = [
    "FORMATS",
    "LEVELS",
    "LibraryDebugFilter",
    "add_process_id",
    "configure_logging",
    "renderer",
    "shared_processors",
]

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS: Final = ("json", "console")

_HANDLER_NAME: Final = "logging_config"

# Loggers that come with their own handlers (uvicorn's dictConfig runs before our app is
# imported) or that libraries may give handlers: they lose them and write through root.
_FOLLOW_ROOT: Final = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "httpx", "httpcore")
# Library loggers that put payloads in DEBUG lines: sse-starlette every frame, the openai client
# its request options (the prompt), the Agents SDK model data, httpcore response headers. They
# never log below INFO, whatever CHAT_LOG_LEVEL and CHAT_LOG_CONTENT say: content logging means
# our own lines with the whole message and answer, redacted as a whole; a library's frames split
# a secret into pieces no redactor recognises (a JWT across two deltas got through that way).
_PAYLOAD_LOGGERS: Final = (
    "sse_starlette",
    "sse_starlette.sse",
    "openai",
    "openai.agents",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "aiohttp",
    "asyncio",
    "hpack",
)
# Only these (and structlog, which only our code uses) may write DEBUG lines; any other
# library's DEBUG record is dropped at the handler, in case it logs payloads too.
_DEBUG_ALLOWED: Final = frozenset({"chat", "logging_config", "app", "__main__", "uvicorn"})
# Our access middleware writes the access line; uvicorn's would add a second, with the query
# string in it.
_UVICORN_ACCESS: Final = "uvicorn.access"

_SDK_CONTENT_FLAGS: Final = (
    "OPENAI_AGENTS_DONT_LOG_MODEL_DATA",
    "OPENAI_AGENTS_DONT_LOG_TOOL_DATA",
)

_ENCODER: Final = msgspec.json.Encoder(enc_hook=repr)


def _dumps(event_dict: Any, **_: Any) -> str:
    """Serialize one event to a JSON line; `JSONRenderer` passes json.dumps options we ignore."""
    if isinstance(event_dict, dict) and "event" in event_dict and next(iter(event_dict)) != "event":
        # structlog puts the message last; people scanning lines look for it first.
        event_dict = {"event": event_dict["event"], **event_dict}
    try:
        return _ENCODER.encode(event_dict).decode()
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        # Lone surrogates, 100-digit ints, odd keys: slower, but the line still gets out.
        return json.dumps(event_dict, default=repr, skipkeys=True)


def add_process_id(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """``pid``: with ``--workers N`` the lines of every worker share one stdout."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _parse_level(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}") from None


def shared_processors(fmt: str = "json", log_content: bool = False) -> list[Processor]:
    """The chain every event goes through before rendering, structlog's and stdlib's alike."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    render_exception: Processor = (
        # Never show_locals: frame locals hold prompts and keys.
        ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if fmt == "json"
        # A string before redaction; ConsoleRenderer would otherwise format it after.
        else structlog.processors.format_exc_info
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        add_process_id,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.stdlib.add_logger_name,
        render_exception,
        # After exceptions were rendered, so their messages are redacted too.
        redact_sensitive_keys,
        ContentRedactor(log_content),
        redact_secret_values,
    ]


def renderer(fmt: str) -> Processor:
    """The last processor: one JSON object per line, or console text."""
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_dumps)
    return structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback
    )


class LibraryDebugFilter(logging.Filter):
    """Drop DEBUG records of library loggers: only ours (and uvicorn's) may log below INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        if is_structlog_record(record):
            return True  # our own code
        return record.name.partition(".")[0] in _DEBUG_ALLOWED


def _route_library_loggers(level: int) -> None:
    """Undo handlers set by uvicorn or libraries, so every line goes through root's chain."""
    payload_level = max(level, logging.INFO)
    levels = {name: logging.NOTSET for name in _FOLLOW_ROOT}
    levels |= {name: payload_level for name in _PAYLOAD_LOGGERS}
    levels[_UVICORN_ACCESS] = max(level, logging.WARNING)
    for name, logger_level in levels.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
        logger.setLevel(logger_level)
        logger.propagate = True
        logger.disabled = False
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DroppedReaderFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(DroppedReaderFilter())


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    log_content: bool = False,
    stream: TextIO | None = None,
    *,
    cache_logger_on_first_use: bool = False,
) -> None:
    """Send structlog and stdlib logging, redacted, as one line per event to *stream* (stdout).

    Safe to call again (tests do): the previous handler is replaced, never duplicated.
    """
    numeric_level = _parse_level(level)
    pre_chain = shared_processors(fmt, log_content)
    if not log_content:
        # Read by the Agents SDK at import: this only helps when called before `import agents`
        # (its defaults already say "don't log" in 0.24; this keeps it so).
        for flag in _SDK_CONTENT_FLAGS:
            os.environ.setdefault(flag, "1")

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *pre_chain,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=cache_logger_on_first_use,
    )

    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(LibraryDebugFilter())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer(fmt),
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        # Any other root handler would write a second, unredacted copy of each line.
        root.removeHandler(old)
        if old.get_name() == _HANDLER_NAME:
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)
    _route_library_loggers(numeric_level)
