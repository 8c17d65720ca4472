"""Where stream events live: a per-stream log of SSE frames that readers replay and follow.

A frame is the full SSE bytes of one event; its id is its 1-based position in the log, so
"after Last-Event-ID k" is simply "frames k+1 …". The store also carries the two signals that
must reach the worker running a stream from anywhere: how many readers are attached, and a
request to cancel. ``MemoryStreamStore`` (``memory.py``) is the default; ``RedisStreamStore``
(``redis_store.py``, on Redis Streams) lets a reader resume on another worker or replica.

A shared store can fail apart from this process: it can go away (``StoreUnavailable`` from any
call, ``available`` false until it answers again), and the worker running a stream can die, which
readers learn from the run's lease lapsing (``read``'s ``lapsed``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final, Protocol

import msgspec


class StreamNotFound(Exception):
    """No stream with that id (never created, or expired)."""


class StoreUnavailable(Exception):
    """The store cannot be reached, or lost an open log: nothing more goes through it."""


# Builds the terminal frame that ends a log whose run's worker died, given its event id.
LapsedFrame = Callable[[int], bytes]
# The code of that frame (a retryable error: the reader may start again elsewhere).
LAPSED_OUTCOME: Final = "upstream_unavailable"


class StreamInfo(msgspec.Struct, frozen=True):
    """What a reader needs to decide between 200, 204 and 404, and how a finished log ended.

    ``outcome`` is the terminal event's ``done`` or error code, as data (no reader parses the
    frames back); None while the log is open, or when it was closed without a terminal event.
    """

    last_id: int
    finished: bool
    outcome: str | None = None


class StreamStore(Protocol):
    """Storage of stream logs; every method is safe to call from any worker.

    Any call may raise ``StoreUnavailable``.
    """

    @property
    def available(self) -> bool:
        """False from a failed call until the store answers again."""

    async def create(self, stream_id: str) -> None:
        """Start an empty log (and, when shared, the lease of its run)."""

    async def append(
        self, stream_id: str, frames: list[bytes], *, finished: bool, outcome: str | None = None
    ) -> bool:
        """Add frames in order; ``finished`` marks the last one as the terminal event.

        ``outcome`` (with ``finished``): ``done`` or the terminal error code, kept for ``info``.

        False when nothing could be added: the log is finished (perhaps by a reader that saw the
        run's lease lapse) or gone. The run has nobody left to write for.
        """

    async def info(self, stream_id: str) -> StreamInfo | None:
        """The log's length, whether it is finished and how; None when unknown or expired."""

    def read(
        self, stream_id: str, after: int, *, lapsed: LapsedFrame | None = None
    ) -> AsyncIterator[bytes]:
        """Frames after id ``after``, batched, following the log until its terminal frame.

        With ``lapsed``, a reader that finds the run's lease lapsed ends the log with that frame
        (only one terminal frame is ever written, whoever else tries), outcome ``LAPSED_OUTCOME``.
        """

    async def reader_joined(self, stream_id: str) -> None:
        """A reader attached (on any worker)."""

    async def reader_left(self, stream_id: str) -> None:
        """A reader went away (on any worker)."""

    async def readers(self, stream_id: str) -> int:
        """Readers attached now, across workers."""

    async def request_cancel(self, stream_id: str) -> None:
        """Ask the worker that runs the stream to cancel it."""

    async def cancel_requested(self, stream_id: str) -> bool:
        """Whether someone asked to cancel the stream."""

    async def renew_leases(self, stream_ids: list[str]) -> None:
        """Tell readers everywhere that this process still runs these streams."""

    async def watch_health(self) -> None:
        """Probe the store for ever, keeping ``available`` current."""

    async def aclose(self) -> None:
        """Release connections."""
