"""Agents SDK run -> ChatEvent iterator: deltas, then exactly one ``done`` or ``error``.

The consumer is a thin loop over a pure ``sdk_event -> ChatEvent | None`` mapping
(``mapping.py``). Deadlines (first token, idle, total) bound every wait (``deadlines.py``), and
``result.cancel()`` sits in a ``finally``: a consumer that stops iterating does not stop the run
by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import structlog
from agents import Agent, Model, ModelResponse, ModelSettings, Runner
from agents.memory import Session
from openai.types.responses import Response

from chat.errors import spec_for
from chat.events import ChatEvent, Delta, Done, Error, Usage
from chat.run.control import RunControl, RunStats
from chat.run.deadlines import Deadlines, Watchdog
from chat.run.mapping import TEXT_DELTA, finish_reason_of, map_sdk_event
from chat.run.upstream_errors import upstream_failure
from chat.seams import run_config

log = structlog.get_logger(__name__)


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
                if event.type == TEXT_DELTA and event.delta:
                    append(event.delta)
                yield event

    async def close(self) -> None:
        return None


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
    config = run_config(model=tap, tracing=tracing, model_settings=model_settings)
    result = Runner.run_streamed(agent, input=message, run_config=config, session=session)
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
