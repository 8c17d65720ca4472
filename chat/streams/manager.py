"""Runs decoupled from readers: each run writes its events into a stream log, readers follow it.

A run keeps going while no reader is attached for ``grace_s`` (long enough for EventSource's
automatic reconnect), then it is cancelled to control cost. Every log ends with exactly one
terminal event, whatever stopped the run: done, an upstream error, DELETE (``cancelled``), the
grace period (``cancelled``) or shutdown (``shutting_down``).

Two failures of a shared store end streams from outside the log:

- the store goes away: each reader ends with one ``error`` ``store_unavailable`` of its own
  (nothing can be written any more) and the run is stopped, as nobody can read what it writes;
- the worker running a stream dies: its lease lapses, and the first follower to notice ends the
  log with ``upstream_unavailable`` (retryable), which every reader then reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Final

import anyio
import structlog

from chat.events import ChatEvent, Delta, Error, encode_sse
from chat.run.control import RunControl, RunStats
from chat.streams.frames import error_frame, last_event_id, new_stream_id
from chat.streams.store import StoreUnavailable, StreamStore

log = structlog.get_logger(__name__)

FIRST_READER_S: Final = 10.0


class StreamRun:
    """One run in this process: its control, its stats, and its local readers."""

    __slots__ = (
        "control",
        "detached",
        "done",
        "grace",
        "outcome",
        "read",
        "readers",
        "stats",
        "store_lost",
        "stream_id",
        "task",
    )

    def __init__(self, stream_id: str, control: RunControl, stats: RunStats) -> None:
        self.stream_id = stream_id
        self.control = control
        self.stats = stats
        self.readers = 0
        self.read = False  # a reader attached at some point: leaving now means detached
        self.grace: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = False
        # Cancelled because nobody reads it any more (its outcome is the client's leaving).
        self.detached = False
        # The store failed under this run: its readers got store_unavailable.
        self.store_lost = False
        # ``done`` or the error code of the terminal event, once the pump has written it.
        self.outcome: str | None = None


class Reading:
    """One reader's end of a stream, as data: ``follow`` sets ``outcome`` when the log ends.

    ``done`` or the terminal error code (``store_unavailable`` when the store failed under the
    reader); None while reading, when the reader left first, or for a log closed without one.
    """

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome: str | None = None


class StreamManager:
    """Starts runs into the store, counts readers, and cancels runs nobody is reading."""

    def __init__(
        self,
        store: StreamStore,
        *,
        grace_s: float,
        shared_store: bool = False,
        lease_s: float = 10.0,
        on_finish: Callable[[StreamRun], None] | None = None,
        contended: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.grace_s = grace_s
        self.lease_s = lease_s
        # With a shared store, readers on other workers count too: ask the store before cancelling.
        self.shared_store = shared_store
        self._on_finish = on_finish
        self._contended = contended
        self._runs: dict[str, StreamRun] = {}
        self._checks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        events: AsyncIterator[ChatEvent],
        *,
        control: RunControl,
        stats: RunStats,
        stream_id: str | None = None,
    ) -> StreamRun:
        """Create the log and start pumping events into it; the grace clock starts at once."""
        run = StreamRun(stream_id or new_stream_id(), control, stats)
        await self.store.create(run.stream_id)
        self._runs[run.stream_id] = run
        run.task = asyncio.create_task(self._pump(run, events), name=f"stream-{run.stream_id}")
        # The first reader gets at least FIRST_READER_S to arrive, even with a zero grace period.
        self._arm_grace(run, max(self.grace_s, FIRST_READER_S))
        return run

    async def _pump(self, run: StreamRun, events: AsyncIterator[ChatEvent]) -> None:
        event_id = 0
        append = self.store.append
        stream_id = run.stream_id
        finished = False
        try:
            async with aclosing(events):
                async for event in events:
                    event_id += 1
                    frame = encode_sse(event, event_id)
                    if type(event) is Delta:
                        landed = await append(stream_id, [frame], finished=False)
                    else:
                        finished = True
                        run.outcome = event.code if type(event) is Error else "done"
                        landed = await append(
                            stream_id, [frame], finished=True, outcome=run.outcome
                        )
                    if not landed:
                        # Ended by a reader that saw our lease lapse (we were stalled), or gone:
                        # nobody reads what this run writes any more. Closing events stops it.
                        log.warning("stream_log_closed_under_run", stream_id=stream_id)
                        finished = True
                        break
        except StoreUnavailable:
            run.store_lost = True
            log.warning("stream_store_lost", stream_id=stream_id, events=event_id)
        except Exception:
            log.exception("stream_pump_failed", stream_id=stream_id)
        finally:
            run.done = True
            if run.grace is not None:
                run.grace.cancel()
                run.grace = None
            self._runs.pop(stream_id, None)
            if not finished and not run.store_lost:
                # The run ended without its terminal event (cancelled task): close the log.
                with anyio.CancelScope(shield=True), contextlib.suppress(StoreUnavailable):
                    await append(stream_id, [], finished=True)
            if self._on_finish is not None:
                self._on_finish(run)

    async def follow(
        self, stream_id: str, after: int, *, request_id: str = "-", reading: Reading | None = None
    ) -> AsyncIterator[bytes]:
        """Frames after ``after`` as they come; attaching stops the grace clock.

        Always ends with one terminal event: the log's own, or ``store_unavailable`` when the
        store fails under the reader (the log can then no longer be trusted to end). With
        ``reading``, its ``outcome`` says which, once the last frame is out.
        """
        run = self._runs.get(stream_id)
        if run is not None:
            run.readers += 1
            run.read = True
            if run.grace is not None:
                run.grace.cancel()
                run.grace = None
        store = self.store
        joined = False
        last = b""
        try:
            await store.reader_joined(stream_id)
            joined = True
            lapsed = (
                (lambda event_id: error_frame("upstream_unavailable", request_id, event_id))
                if self.shared_store
                else None
            )
            async with aclosing(store.read(stream_id, after, lapsed=lapsed)) as frames:
                async for chunk in frames:
                    last = chunk
                    yield chunk
            if reading is not None:
                reading.outcome = await self._outcome_of(stream_id, run)
        except StoreUnavailable:
            event_id = last_event_id(last, after) + 1
            log.warning("stream_reader_store_lost", stream_id=stream_id, event_id=event_id)
            if run is not None:
                # Nobody can read what the run writes now: stop paying for it.
                run.store_lost = True
                run.control.stop("store_unavailable")
            if reading is not None:
                reading.outcome = "store_unavailable"
            yield error_frame("store_unavailable", request_id, event_id)
        finally:
            if joined and store.available:
                with anyio.CancelScope(shield=True), contextlib.suppress(StoreUnavailable):
                    await store.reader_left(stream_id)
            if run is not None:
                run.readers -= 1
                if run.readers == 0 and not run.done:
                    if self._contended is not None and self._contended():
                        self._expire(run, reason="contended")
                    else:
                        self._arm_grace(run)

    async def _outcome_of(self, stream_id: str, run: StreamRun | None) -> str | None:
        """How a log read to its end ended: this process's run knows, else the store does."""
        if run is not None and run.outcome is not None:
            return run.outcome
        info = await self.store.info(stream_id)
        return info.outcome if info is not None else None

    def cancel(self, stream_id: str, code: str = "cancelled", *, detached: bool = False) -> bool:
        """Stop a run of this process; False when it is not running here.

        ``detached``: stopped because its only reader went away, not by a DELETE.
        """
        run = self._runs.get(stream_id)
        if run is None:
            return False
        run.detached = run.detached or detached
        run.control.stop(code)
        return True

    def _arm_grace(self, run: StreamRun, grace_s: float | None = None) -> None:
        if run.readers or run.done:
            return
        grace_s = self.grace_s if grace_s is None else grace_s
        if grace_s <= 0:
            self._expire(run)
            return
        loop = asyncio.get_running_loop()
        run.grace = loop.call_later(grace_s, self._expire, run)

    def preempt_detached(self) -> None:
        """A request waits for the model: stop the runs whose readers have all gone.

        Such a run would otherwise hold the model for up to ``grace_s`` for a reader that may
        never come back, while a reader that is here waits (measured: 10 s to the first token
        behind one detached local-model run). Runs whose first reader has not arrived yet keep
        their time.
        """
        for run in list(self._runs.values()):
            if run.read and run.readers == 0 and not run.done:
                if run.grace is not None:
                    run.grace.cancel()
                self._expire(run, reason="contended")

    def _expire(self, run: StreamRun, reason: str = "grace") -> None:
        run.grace = None
        if run.readers or run.done:
            return
        if self.shared_store:
            task = asyncio.create_task(self._expire_if_unread(run, reason))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
            return
        self._stop_detached(run, reason)

    async def _expire_if_unread(self, run: StreamRun, reason: str) -> None:
        try:
            readers = await self.store.readers(run.stream_id)
        except StoreUnavailable:
            # Nobody can read this run through the store now, and the grace period is over.
            log.info("stream_detached_cancel", stream_id=run.stream_id, store="unavailable")
            run.control.stop("store_unavailable")
            return
        if readers > 0:
            # Read on another worker: look again later rather than cancel a watched stream.
            if not run.done and run.readers == 0 and run.grace is None:
                run.grace = asyncio.get_running_loop().call_later(
                    max(self.grace_s, 0.5), self._expire, run
                )
            return
        self._stop_detached(run, reason)

    def _stop_detached(self, run: StreamRun, reason: str) -> None:
        if run.done or run.readers:
            return
        log.info(
            "stream_detached_cancel", stream_id=run.stream_id, grace_s=self.grace_s, reason=reason
        )
        run.detached = True
        run.control.stop("cancelled")

    async def watch_remote_cancels(self, poll_s: float = 0.5) -> None:
        """With a shared store, DELETE may land on another worker: poll for its request."""
        while True:
            await asyncio.sleep(poll_s)
            if not self.store.available:
                continue
            try:
                for stream_id in list(self._runs):
                    if await self.store.cancel_requested(stream_id):
                        self.cancel(stream_id)
            except StoreUnavailable:
                continue  # the health probe notices when it is back

    async def renew_leases(self) -> None:
        """With a shared store, tell readers everywhere that our runs live (every lease_s / 3)."""
        interval = self.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            if not self._runs or not self.store.available:
                continue
            with contextlib.suppress(StoreUnavailable):
                await self.store.renew_leases(list(self._runs))

    async def aclose(self) -> None:
        """Cancel what is still running (the drainer normally ended it first)."""
        tasks: list[Any] = [run.task for run in self._runs.values() if run.task is not None]
        for run in list(self._runs.values()):
            run.control.stop("shutting_down")
        if tasks:
            await asyncio.wait(tasks, timeout=5)
