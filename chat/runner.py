"""Agents SDK run -> ChatEvent iterator: deltas, then exactly one ``done`` or ``error``.

The consumer is a thin loop over a pure ``sdk_event -> ChatEvent | None`` mapping. Deadlines
(first token, idle, total) bound every wait, and ``result.cancel()`` sits in a ``finally``: a
consumer that stops iterating does not stop the run by itself.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Final

import msgspec
import structlog
from agents import Agent, Model, ModelResponse, ModelSettings, RunConfig, Runner
from agents.memory import Session
from agents.stream_events import StreamEvent
from openai.types.responses import Response

from chat.errors import spec_for
from chat.events import ChatEvent, Delta, Done, Error, Usage
from chat.upstream_errors import upstream_failure

log = structlog.get_logger(__name__)

_DELTA: Final = "response.output_text.delta"
_COMPLETED: Final = "response.completed"
_RAW: Final = "raw_response_event"


class Deadlines(msgspec.Struct, frozen=True):
    """Seconds allowed until the first token, between tokens, and for the whole run."""

    first_token_s: float = 30.0
    idle_s: float = 30.0
    total_s: float = 300.0


class RunStats:
    """What the access log reports about one stream; filled as the stream goes."""

    __slots__ = (
        "deltas",
        "finish_reason",
        "first_token_at",
        "outcome",
        "output_chars",
        "retry_after",
        "started_at",
        "upstream_request_id",
        "usage",
    )

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.deltas = 0
        self.output_chars = 0
        self.outcome: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.upstream_request_id: str | None = None
        # The provider's Retry-After (seconds) when it failed the run; JSON mode passes it on.
        self.retry_after: str | None = None

    def ttft_ms(self) -> float | None:
        """Milliseconds from the start of the run to the first delta."""
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started_at) * 1000, 2)


class RunControl:
    """Stops a run from outside (shutdown, DELETE) and remembers why, for its ``error`` event."""

    __slots__ = ("_cancel", "code")

    def __init__(self) -> None:
        self.code: str | None = None
        self._cancel: Callable[[], None] | None = None

    def stop(self, code: str) -> None:
        """End the run; its stream finishes with an ``error`` event carrying ``code``."""
        if self.code is None:
            self.code = code
        if self._cancel is not None:
            self._cancel()

    def attach(self, cancel: Callable[[], None]) -> None:
        """Connect to a started run; a stop that came first takes effect at once."""
        self._cancel = cancel
        if self.code is not None:
            cancel()


class TapModel(Model):
    """Wraps the real model for one run and remembers every text delta it produced.

    The SDK drops queued events when some errors end a run (Chat Completions stream errors among
    them); the tap lets the consumer send text the provider produced before it failed.
    """

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.produced: list[str] = []

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return await self.inner.get_response(*args, **kwargs)

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        append = self.produced.append
        async with aclosing(self.inner.stream_response(*args, **kwargs)) as events:  # type: ignore[type-var]
            async for event in events:
                if event.type == _DELTA and event.delta:
                    append(event.delta)
                yield event

    async def close(self) -> None:
        return None


class Watchdog:
    """One timer for a run's moving deadline: moving it is an assignment, not a new timer.

    ``asyncio.timeout_at`` around every wait costs a timer, a context manager and a task lookup
    per token (~4 us here). Here a deadline that moves later only updates a float: the timer
    re-arms when it fires early. A deadline that moves earlier (the idle deadline after the
    first token, when it is shorter than the first-token one) re-arms the timer at once, or it
    would fire late. The timer cancels the consumer's task only while that task waits in
    ``wait()``; a deadline that passes elsewhere fails the next ``wait()`` at once.
    """

    __slots__ = ("_armed_at", "_deadline", "_fired", "_handle", "_loop", "_task", "_waiting")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._waiting = False
        self._fired = False
        self._armed_at = deadline
        self._handle = self._loop.call_at(deadline, self._check)

    @property
    def deadline(self) -> float:
        """The loop time at which ``wait()`` gives up."""
        return self._deadline

    @deadline.setter
    def deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if deadline < self._armed_at:
            self._handle.cancel()
            self._arm(deadline)

    def _arm(self, at: float) -> None:
        self._armed_at = at
        self._handle = self._loop.call_at(at, self._check)

    def _check(self) -> None:
        if self._deadline > self._loop.time():
            self._arm(self._deadline)
            return
        # No timer is armed now: any deadline set later arms one.
        self._armed_at = math.inf
        if self._waiting and self._task is not None and not self._fired:
            self._fired = True
            self._task.cancel()

    async def wait(self, awaitable: Any) -> Any:
        """``await awaitable``, or ``TimeoutError`` once the deadline passes."""
        if self._deadline <= self._loop.time():
            raise TimeoutError
        task = self._task = asyncio.current_task()
        self._waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Our own cancel, and nobody else's since: a timeout, as asyncio.timeout reports it.
            if self._fired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def close(self) -> None:
        self._handle.cancel()


def map_sdk_event(event: StreamEvent) -> Delta | Response | None:
    """A text delta becomes a ``Delta``; the completed response is returned for the ``done``."""
    if event.type != _RAW:
        return None
    data = event.data
    kind = data.type
    if kind == _DELTA:
        return Delta(data.delta) if data.delta else None
    if kind == _COMPLETED:
        return data.response  # type: ignore[no-any-return,union-attr]
    return None


def finish_reason_of(response: Response | None) -> str:
    """``length`` when the provider stopped at the output token limit, else ``stop``."""
    if response is not None and response.incomplete_details is not None:
        if response.incomplete_details.reason == "max_output_tokens":
            return "length"
        return "content_filter"
    return "stop"


async def stream_chat(
    *,
    agent: Agent[Any],
    model: Model,
    message: str,
    request_id: str,
    deadlines: Deadlines,
    model_settings: ModelSettings,
    tracing: bool = False,
    stats: RunStats | None = None,
    control: RunControl | None = None,
    session: Session | None = None,
) -> AsyncIterator[ChatEvent]:
    """Run the agent on one message and yield its answer as events, ending with one terminal.

    With ``session`` the Runner puts the session's history before the message.
    """
    stats = stats if stats is not None else RunStats()
    tap = TapModel(model)
    run_config = RunConfig(
        model=tap, tracing_disabled=not tracing, trace_include_sensitive_data=False
    )
    # Set after construction: RunConfig.__post_init__ resolves its own type hints (typing.
    # get_type_hints, ~0.5-1 ms a run) only to re-validate a ModelSettings we already built.
    run_config.model_settings = model_settings
    result = Runner.run_streamed(agent, input=message, run_config=run_config, session=session)
    if control is not None:
        control.attach(result.cancel)
    loop = asyncio.get_running_loop()
    started = loop.time()
    total_deadline = started + deadlines.total_s
    idle_s = deadlines.idle_s
    watchdog = Watchdog(min(started + deadlines.first_token_s, total_deadline))
    completed: Response | None = None
    delivered = 0
    events = result.stream_events()
    try:
        while True:
            try:
                sdk_event = await watchdog.wait(anext(events))
            except StopAsyncIteration:
                break
            mapped = map_sdk_event(sdk_event)
            if mapped is None:
                continue
            if type(mapped) is Delta:
                if stats.first_token_at is None:
                    stats.first_token_at = time.perf_counter()
                delivered += 1
                stats.deltas += 1
                stats.output_chars += len(mapped.text)
                watchdog.deadline = min(loop.time() + idle_s, total_deadline)
                yield mapped
            else:
                completed = mapped  # type: ignore[assignment]
    except TimeoutError:
        log.warning("upstream_failed", code="upstream_timeout", delivered=delivered)
        async for event in _fail(tap, delivered, "upstream_timeout", request_id, stats):
            yield event
        return
    except Exception as exc:  # CancelledError is a BaseException and propagates
        failure = upstream_failure(exc)
        code = failure.code
        stats.retry_after = failure.retry_after
        if code == "internal_error":
            log.exception("stream_failed", code=code, error_type=type(exc).__name__)
        else:
            # The exception's text may hold the upstream body (which can echo a key): type only.
            log.warning(
                "upstream_failed",
                code=code,
                error_type=type(exc).__name__,
                upstream_status=getattr(exc, "status_code", None),
            )
        async for event in _fail(tap, delivered, code, request_id, stats, failure.retryable):
            yield event
        return
    finally:
        watchdog.close()
        result.cancel()
        await events.aclose()
        stats.upstream_request_id = _upstream_request_id(result.raw_responses)

    if completed is None:
        code = control.code if control is not None and control.code else "upstream_error"
        async for event in _fail(tap, delivered, code, request_id, stats):
            yield event
        return
    usage = result.context_wrapper.usage
    stats.usage = Usage(usage.input_tokens, usage.output_tokens, usage.total_tokens)
    stats.finish_reason = finish_reason_of(completed)
    stats.outcome = "done"
    yield Done(finish_reason=stats.finish_reason, usage=stats.usage, request_id=request_id)


async def _fail(
    tap: TapModel,
    delivered: int,
    code: str,
    request_id: str,
    stats: RunStats,
    retryable: bool | None = None,
) -> AsyncIterator[ChatEvent]:
    """Send text the provider produced but the SDK dropped, then the ``error`` event."""
    missing = tap.produced[delivered:]
    if missing:
        text = "".join(missing)
        if text:
            if stats.first_token_at is None:
                stats.first_token_at = time.perf_counter()
            stats.deltas += 1
            stats.output_chars += len(text)
            yield Delta(text)
    spec = spec_for(code)
    stats.outcome = code
    if retryable is None:
        retryable = spec.retryable
    yield Error(code=code, message=spec.message, retryable=retryable, request_id=request_id)


def _upstream_request_id(responses: list[ModelResponse]) -> str | None:
    for response in reversed(responses):
        if response.request_id:
            return response.request_id
    return None
