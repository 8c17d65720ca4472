"""Group an async byte stream by arrival: one chunk that was waited for, plus all that were ready.

httpx hands over a streamed body one HTTP chunk at a time, and an LLM server writes one chunk
per token; when many tokens arrived in one socket read (a fast upstream, or a server busy under
load), the next chunks are ready without waiting. ``Arrivals.next_batch()`` takes all of those in
one go, so the model can turn them into one event instead of one event per token: every later
stage (the SDK's run loop, our runner, the stream log, the SSE writer) then works once per read.

To know whether the next chunk is ready, it starts the next read by hand (``send(None)`` on the
awaitable): either it completes at once, or it yields the future it waits on, and that pending
read is resumed, with the exact semantics of ``await``, on the following call. ``aclose()``
finishes a pending read by throwing into it, so the source's own cleanup runs as usual.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any


class _Abandoned(Exception):
    """Thrown into a pending read that nobody will wait for any more."""


class _Resume:
    """The rest of an awaitable that already yielded ``first``: ``yield from``, started late."""

    __slots__ = ("_awaitable", "_first")

    def __init__(self, awaitable: Any, first: Any) -> None:
        self._awaitable = awaitable
        self._first = first

    def __await__(self) -> Generator[Any, Any, bytes]:
        awaitable = self._awaitable
        value = self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                awaitable.close()
                raise
            except BaseException as exc:  # CancelledError: forwarded, as ``await`` would
                try:
                    value = awaitable.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    value = awaitable.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


class Arrivals:
    """Reads ``source`` in batches of what arrived together; an empty batch is the end."""

    __slots__ = ("_ended", "_error", "_pending", "_source")

    def __init__(self, source: AsyncGenerator[bytes, None]) -> None:
        self._source = source
        self._pending: tuple[Any, Any] | None = None
        self._error: Exception | None = None
        self._ended = False

    @property
    def waiting(self) -> bool:
        """A read is under way: the next batch needs the network, so the caller will suspend."""
        return self._pending is not None

    async def next_batch(self) -> list[bytes]:
        """Wait for the next chunk, then take every chunk that is ready without waiting."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._ended:
            return []
        try:
            if self._pending is not None:
                awaitable, first = self._pending
                self._pending = None
                chunk = await _Resume(awaitable, first)
            else:
                chunk = await anext(self._source)
        except StopAsyncIteration:
            self._ended = True
            return []
        batch = [chunk]
        while True:
            awaitable = anext(self._source)
            try:
                first = awaitable.send(None)  # type: ignore[attr-defined]
            except StopIteration as done:
                batch.append(done.value)
                continue
            except StopAsyncIteration:
                self._ended = True
            except Exception as exc:
                # The read failed at once: hand over what arrived first, fail on the next call.
                self._error = exc
            else:
                self._pending = (awaitable, first)
            return batch

    async def aclose(self) -> None:
        """Abandon a pending read (its cleanup runs), then close the source."""
        pending, self._pending = self._pending, None
        if pending is not None:
            awaitable, _ = pending
            try:
                value = awaitable.throw(_Abandoned())
                await _Resume(awaitable, value)
            except (StopIteration, StopAsyncIteration, Exception):
                pass  # _Abandoned coming back, or the source failing as it cleans up
        await self._source.aclose()
