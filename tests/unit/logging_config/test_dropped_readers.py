"""uvicorn's "returned without completing response" line is dropped only for readers we let go."""

from __future__ import annotations

import contextvars
import logging

from logging_config.dropped_readers import (
    UNFINISHED_MESSAGE,
    DroppedReaderFilter,
    mark_reader_dropped,
)


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, None, None)


class TestDroppedReaderFilter:
    def test_filter_when_request_not_marked_then_line_kept(self) -> None:
        keep = contextvars.copy_context().run(
            DroppedReaderFilter().filter, record(UNFINISHED_MESSAGE)
        )
        assert keep

    def test_filter_when_request_marked_then_only_that_line_dropped(self) -> None:
        def in_marked_request() -> tuple[bool, bool]:
            mark_reader_dropped()
            check = DroppedReaderFilter().filter
            return check(record(UNFINISHED_MESSAGE)), check(
                record("Exception in ASGI application\n")
            )

        unfinished, other = contextvars.copy_context().run(in_marked_request)
        assert (unfinished, other) == (False, True)
