"""The default stream store: logs in this process's memory, bounded in size and in time."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable

from chat.streams.store import LapsedFrame, StreamInfo, StreamNotFound


class _Log:
    """One stream's frames and the futures of the readers waiting for more."""

    __slots__ = ("cancel", "expires_at", "finished", "frames", "outcome", "readers", "waiters")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.finished = False
        self.outcome: str | None = None
        self.readers = 0
        self.cancel = False
        self.expires_at: float | None = None
        self.waiters: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        waiters = self.waiters
        if waiters:
            self.waiters = []
            for waiter in waiters:
                if not waiter.done():  # a reader cancelled while waiting left its future
                    waiter.set_result(None)

    async def changed(self) -> None:
        # One future per waiting reader: cancelling one reader cancels only its own future
        # (a shared future would need asyncio.shield, an extra future and task hop per event).
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter


class MemoryStreamStore:
    """Logs in this process: bounded in events per stream and in finished streams kept.

    It fails only with the process, which takes its runs and readers along: no health, no leases.
    """

    available = True

    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        max_finished: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_finished = max_finished
        self._clock = clock or time.monotonic
        self._logs: dict[str, _Log] = {}
        # Finished streams in the order they finished: expiry and the size bound pop the left.
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def _get(self, stream_id: str) -> _Log | None:
        log = self._logs.get(stream_id)
        if log is not None and log.expires_at is not None and log.expires_at <= self._clock():
            self._drop(stream_id)
            return None
        return log

    def _drop(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        self._finished.pop(stream_id, None)
        if log is not None:
            log.wake()

    def _sweep(self) -> None:
        now = self._clock()
        while self._finished:
            oldest = next(iter(self._finished))
            log = self._logs.get(oldest)
            expired = log is None or (log.expires_at is not None and log.expires_at <= now)
            if not expired and len(self._finished) <= self.max_finished:
                break
            self._drop(oldest)

    async def create(self, stream_id: str) -> None:
        self._sweep()
        self._logs[stream_id] = _Log()

    async def append(
        self, stream_id: str, frames: list[bytes], *, finished: bool, outcome: str | None = None
    ) -> bool:
        log = self._logs.get(stream_id)
        if log is None or log.finished:
            return False
        log.frames.extend(frames)
        if finished:
            log.finished = True
            log.outcome = outcome
            log.expires_at = self._clock() + self.ttl_s
            self._finished[stream_id] = None
            self._sweep()
        log.wake()
        return True

    async def info(self, stream_id: str) -> StreamInfo | None:
        log = self._get(stream_id)
        if log is None:
            return None
        return StreamInfo(last_id=len(log.frames), finished=log.finished, outcome=log.outcome)

    async def read(
        self, stream_id: str, after: int, *, lapsed: LapsedFrame | None = None
    ) -> AsyncIterator[bytes]:
        log = self._get(stream_id)
        if log is None:
            raise StreamNotFound(stream_id)
        cursor = after
        while True:
            frames = log.frames
            if len(frames) > cursor:
                batch = frames[cursor:]
                cursor = len(frames)
                yield batch[0] if len(batch) == 1 else b"".join(batch)
                continue
            if log.finished or self._logs.get(stream_id) is not log:
                return
            await log.changed()

    async def reader_joined(self, stream_id: str) -> None:
        log = self._logs.get(stream_id)
        if log is not None:
            log.readers += 1

    async def reader_left(self, stream_id: str) -> None:
        log = self._logs.get(stream_id)
        if log is not None and log.readers > 0:
            log.readers -= 1

    async def readers(self, stream_id: str) -> int:
        log = self._logs.get(stream_id)
        return log.readers if log is not None else 0

    async def request_cancel(self, stream_id: str) -> None:
        log = self._logs.get(stream_id)
        if log is not None:
            log.cancel = True

    async def cancel_requested(self, stream_id: str) -> bool:
        log = self._logs.get(stream_id)
        return bool(log is not None and log.cancel)

    async def renew_leases(self, stream_ids: list[str]) -> None:
        return None

    async def watch_health(self) -> None:
        return None

    async def aclose(self) -> None:
        for stream_id in list(self._logs):
            self._drop(stream_id)
