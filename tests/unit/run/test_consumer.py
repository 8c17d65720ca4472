"""The Agents SDK consumer: deltas, one terminal event, deadlines, and cancel on every exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, ModelSettings

from chat.events import ChatEvent, Delta, Done, Error
from chat.models.fake import FakeModel, fake_tokens
from chat.models.sdk_events import completed_event, created_event, text_delta_event
from chat.run.consumer import TapModel, stream_chat
from chat.run.control import RunControl, RunStats
from chat.run.deadlines import Deadlines, Watchdog
from chat.run.mapping import finish_reason_of

pytestmark = pytest.mark.anyio

AGENT: Agent[Any] = Agent(name="t", instructions="Be brief.")


class ScriptModel(FakeModel):
    """Yields the given tokens with per-token delays, then fails or hangs as told."""

    def __init__(
        self,
        tokens: list[str],
        *,
        delays: list[float] | None = None,
        fail_with: Exception | None = None,
        hang_after: bool = False,
    ) -> None:
        super().__init__(tokens=0)
        self.script = tokens
        self.delays = delays or [0.0] * len(tokens)
        self.fail_with = fail_with
        self.hang_after = hang_after
        self.closed = asyncio.Event()

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        try:
            yield created_event("r", "m")
            for i, (token, delay) in enumerate(zip(self.script, self.delays, strict=True)):
                if delay:
                    await asyncio.sleep(delay)
                yield text_delta_event(token, i + 1)
            if self.fail_with is not None:
                raise self.fail_with
            if self.hang_after:
                await asyncio.sleep(3600)
            yield completed_event(
                response_id="r",
                model="m",
                text="".join(self.script),
                input_tokens=3,
                output_tokens=len(self.script),
                sequence_number=99,
            )
        finally:
            self.closed.set()


async def collect(model: Any, deadlines: Deadlines | None = None, **kw: Any) -> list[ChatEvent]:
    events = stream_chat(
        agent=AGENT,
        model=model,
        message="hello there",
        request_id="rid",
        deadlines=deadlines or Deadlines(),
        model_settings=ModelSettings(include_usage=True),
        **kw,
    )
    return [event async for event in events]


async def test_fake_model_when_streamed_then_deltas_then_done_with_usage() -> None:
    stats = RunStats()
    events = await collect(FakeModel(tokens=5), stats=stats)
    assert events[:-1] == [Delta(t) for t in fake_tokens(5)]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "stop"
    assert done.request_id == "rid"
    assert (done.usage.output_tokens, done.usage.input_tokens) == (5, 4)
    assert done.usage.total_tokens == 9
    assert stats.outcome == "done" and stats.deltas == 5 and stats.ttft_ms() is not None


async def test_max_tokens_when_reached_then_finish_reason_length() -> None:
    events = [
        e
        async for e in stream_chat(
            agent=AGENT,
            model=FakeModel(tokens=10),
            message="hi",
            request_id="r",
            deadlines=Deadlines(),
            model_settings=ModelSettings(max_tokens=3),
        )
    ]
    assert len(events) == 4
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "length"


async def test_upstream_error_after_deltas_when_streamed_then_text_kept_then_error() -> None:
    request = httpx.Request("POST", "http://upstream/v1/chat/completions")
    failure = openai.APIConnectionError(request=request)
    model = ScriptModel(["a", "b", "c"], fail_with=failure)
    events = await collect(model)
    text = "".join(e.text for e in events if isinstance(e, Delta))
    assert text == "abc"
    assert isinstance(events[-1], Error)
    assert events[-1].code == "upstream_unavailable"
    assert events[-1].retryable is True
    assert sum(isinstance(e, Error | Done) for e in events) == 1


async def test_rate_limit_before_first_delta_when_streamed_then_error_only() -> None:
    response = httpx.Response(429, request=httpx.Request("POST", "http://u/v1/responses"))
    failure = openai.RateLimitError("sk-secret-body", response=response, body=None)
    events = await collect(ScriptModel([], fail_with=failure))
    assert len(events) == 1 and isinstance(events[0], Error)
    assert events[0].code == "upstream_rate_limited"
    assert "sk-secret" not in events[0].message


async def test_first_token_deadline_when_model_silent_then_timeout_and_model_closed() -> None:
    model = ScriptModel(["late"], delays=[5.0])
    events = await collect(model, Deadlines(first_token_s=0.05, idle_s=5, total_s=5))
    assert events == [
        Error("upstream_timeout", "The model did not answer in time.", True, "rid"),
    ]
    await asyncio.wait_for(model.closed.wait(), 2)


async def test_idle_deadline_when_model_stalls_after_first_token_then_timeout() -> None:
    model = ScriptModel(["a", "b"], delays=[0.0, 5.0])
    events = await collect(model, Deadlines(first_token_s=5, idle_s=0.05, total_s=5))
    assert events[0] == Delta("a")
    assert isinstance(events[-1], Error) and events[-1].code == "upstream_timeout"
    await asyncio.wait_for(model.closed.wait(), 2)


async def test_total_deadline_when_model_slow_but_steady_then_timeout() -> None:
    model = ScriptModel(["t"] * 50, delays=[0.02] * 50)
    events = await collect(model, Deadlines(first_token_s=5, idle_s=5, total_s=0.2))
    assert isinstance(events[-1], Error) and events[-1].code == "upstream_timeout"
    assert 0 < sum(isinstance(e, Delta) for e in events) < 50


async def test_consumer_when_it_stops_early_then_model_stream_closed() -> None:
    model = ScriptModel(["a"], hang_after=True)
    events = stream_chat(
        agent=AGENT,
        model=model,
        message="hi",
        request_id="r",
        deadlines=Deadlines(),
        model_settings=ModelSettings(),
    )
    assert await anext(events) == Delta("a")
    await events.aclose()
    await asyncio.wait_for(model.closed.wait(), 2)


async def test_consumer_task_when_cancelled_then_model_stream_closed() -> None:
    model = ScriptModel(["a"], hang_after=True)
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in stream_chat(
            agent=AGENT,
            model=model,
            message="hi",
            request_id="r",
            deadlines=Deadlines(),
            model_settings=ModelSettings(),
        ):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(model.closed.wait(), 2)


async def test_control_when_stopped_then_error_with_that_code() -> None:
    model = ScriptModel(["a"], hang_after=True)
    control = RunControl()
    events = stream_chat(
        agent=AGENT,
        model=model,
        message="hi",
        request_id="r",
        deadlines=Deadlines(),
        model_settings=ModelSettings(),
        control=control,
    )
    assert await anext(events) == Delta("a")
    control.stop("shutting_down")
    rest = [e async for e in events]
    assert len(rest) == 1 and isinstance(rest[0], Error) and rest[0].code == "shutting_down"
    await asyncio.wait_for(model.closed.wait(), 2)


async def test_tap_when_wrapping_then_records_non_empty_deltas() -> None:
    tap = TapModel(FakeModel(tokens=3))
    events = [e async for e in tap.stream_response(None, "x", ModelSettings(), [], None, [], None)]
    assert len(events) == 5
    assert tap.produced == fake_tokens(3)


def test_finish_reason_when_no_details_then_stop() -> None:
    assert finish_reason_of(None) == "stop"
    done = completed_event(
        response_id="r",
        model="m",
        text="x",
        input_tokens=1,
        output_tokens=1,
        sequence_number=1,
        finish_reason="length",
    )
    assert finish_reason_of(done.response) == "length"


async def test_watchdog_when_deadline_moves_on_while_waiting_then_no_timeout() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop.time() + 0.05)
    ready: asyncio.Future[str] = loop.create_future()
    # The deadline moves before the first timer fires: the timer re-arms instead of cancelling.
    watchdog.deadline = loop.time() + 5
    loop.call_later(0.15, ready.set_result, "value")
    try:
        assert await watchdog.wait(ready) == "value"
    finally:
        watchdog.close()


async def test_watchdog_when_deadline_moves_earlier_while_waiting_then_fires_at_new_one() -> None:
    """The idle deadline after a first token can be earlier than the first-token deadline."""
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop.time() + 3.0)
    started = loop.time()
    watchdog.deadline = started + 0.1
    waiter = asyncio.ensure_future(watchdog.wait(loop.create_future()))
    try:
        done, _ = await asyncio.wait({waiter}, timeout=1.5)
        assert waiter in done, "the moved deadline did not fire within 1.5 s (armed for 3 s)"
        assert isinstance(waiter.exception(), TimeoutError)
        assert loop.time() - started < 1.0
    finally:
        waiter.cancel()
        watchdog.close()


async def test_watchdog_when_deadline_passes_while_waiting_then_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop.time() + 0.05)
    with pytest.raises(TimeoutError):
        await watchdog.wait(loop.create_future())
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timeout's cancel was taken back
    watchdog.close()


async def test_watchdog_when_deadline_passes_between_waits_then_next_wait_fails_at_once() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop.time() + 0.02)
    passed = loop.create_future()
    loop.call_later(0.1, passed.set_result, None)
    await passed  # not inside wait(): the task must not be cancelled
    waited: asyncio.Future[None] = loop.create_future()
    with pytest.raises(TimeoutError):
        await watchdog.wait(waited)
    watchdog.close()


async def test_watchdog_when_task_cancelled_from_outside_then_cancelled_error() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop.time() + 5)
    waiting = asyncio.Event()

    async def waiter() -> None:
        waiting.set()
        await watchdog.wait(loop.create_future())

    task = asyncio.create_task(waiter())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watchdog.close()
