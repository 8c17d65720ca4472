"""A reader we dropped on purpose is not a server error: keep uvicorn from logging it as one.

When a stalled reader's send times out, the response cannot be finished (its socket is full),
so the app returns with the body unfinished and uvicorn closes the connection, logging
"ASGI callable returned without completing response." at ERROR. The app marks the request
(a context variable of the request's task, where uvicorn logs that line) and says what happened
in its own line; this filter drops uvicorn's line for marked requests only.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Final

__all__ = ["DroppedReaderFilter", "mark_reader_dropped"]

UNFINISHED_MESSAGE: Final = "ASGI callable returned without completing response."

_dropped: ContextVar[bool] = ContextVar("reader_dropped", default=False)


def mark_reader_dropped() -> None:
    """Call in the request's task when the app gives up on a reader that stopped reading."""
    _dropped.set(True)


class DroppedReaderFilter(logging.Filter):
    """Drops uvicorn's "returned without completing response" line for a dropped reader."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) only for that one message in a request the app marked."""
        return not (record.msg == UNFINISHED_MESSAGE and _dropped.get())
