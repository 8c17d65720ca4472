"""The run owner: every way a run ends gives its slot, agent and drain registration back once,
and what the caller needs afterwards (terminal event, text) is recorded as data."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import msgspec
import pytest

from chat.errors import ChatError
from chat.events import Done, Error
from chat.models.registry import build_backend
from chat.requests import ChatRequest
from chat.service.record import ChatRun
from chat.settings import load_settings
from chat.state import AppState
from chat.streams.manager import Reading
from chat.streams.memory import MemoryStreamStore
from chat.streams.store import StoreUnavailable

pytestmark = pytest.mark.anyio

REQUEST = ChatRequest(message="hello")


def make_state(**overrides: object) -> AppState:
    settings = load_settings({}, **{"backend": "fake", "fake_tokens": 3, **overrides})
    return AppState(settings, build_backend(settings), MemoryStreamStore())


async def read_to_end(state: AppState, run: ChatRun, seen: Reading | None = None) -> bytes:
    frames = state.service.streams.follow(run.stream_id, 0, reading=seen)
    chunks = []
    async with aclosing(frames):
        async for chunk in frames:
            chunks.append(chunk)
    return b"".join(chunks)


def held(state: AppState) -> tuple[int, int]:
    """Slots taken and runs registered with the drainer."""
    return state.service.slots.in_use, state.service.drainer.open_streams


async def test_start_when_run_ends_with_done_then_all_released_and_outcome_recorded() -> None:
    state = make_state()
    run = await state.service.start(REQUEST, request_id="r1", authorization=None, keep_text=True)
    assert held(state) == (1, 1)
    assert state.service.agents.size == 0  # the run holds the only agent
    seen = Reading()
    body = await read_to_end(state, run, seen)
    assert run.stream is not None and run.stream.task is not None
    await run.stream.task
    assert type(run.terminal) is Done
    texts = [
        msgspec.json.decode(line[6:])["text"]
        for line in body.splitlines()
        if line.startswith(b'data: {"type":"delta"')
    ]
    assert run.text() == "".join(texts) == "This is a"
    assert seen.outcome == "done"
    assert held(state) == (0, 0)
    assert state.service.agents.size == 1  # its agent is idle again


async def test_start_when_text_not_asked_then_none_kept() -> None:
    state = make_state()
    run = await state.service.start(REQUEST, request_id="r1", authorization=None)
    await read_to_end(state, run)
    assert type(run.terminal) is Done
    assert run.text() == ""


async def test_start_when_stopped_from_outside_then_error_recorded_and_released() -> None:
    state = make_state(fake_tokens=1000, fake_delay_ms=5)
    run = await state.service.start(REQUEST, request_id="r1", authorization=None)
    seen = Reading()
    state.service.drainer.stop_all("shutting_down")
    await read_to_end(state, run, seen)
    assert type(run.terminal) is Error and run.terminal.code == "shutting_down"
    assert seen.outcome == "shutting_down"
    assert held(state) == (0, 0)


async def test_start_when_store_fails_at_create_then_nothing_held() -> None:
    state = make_state()

    async def failing_create(stream_id: str) -> None:
        raise StoreUnavailable("down")

    state.streams.store.create = failing_create  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await state.service.start(REQUEST, request_id="r1", authorization=None)
    assert held(state) == (0, 0)


async def test_start_when_slots_full_then_overloaded_and_nothing_taken() -> None:
    state = make_state(max_concurrent_streams=1, adaptive_limit=False)
    first = await state.service.start(REQUEST, request_id="r1", authorization=None)
    with pytest.raises(ChatError) as refused:
        await state.service.start(REQUEST, request_id="r2", authorization=None)
    assert refused.value.code == "overloaded"
    assert refused.value.headers == {"Retry-After": "1"}
    with pytest.raises(ChatError):
        state.service.refuse_when_full()
    await read_to_end(state, first)
    assert state.service.slots.in_use == 0
    state.service.refuse_when_full()  # a free slot again: no refusal


async def test_start_when_draining_then_shutting_down_before_any_slot() -> None:
    state = make_state()
    state.service.drainer.begin()
    state.service.refuse_when_full()  # draining lets the request through to say why
    with pytest.raises(ChatError) as refused:
        await state.service.start(REQUEST, request_id="r1", authorization=None)
    assert refused.value.code == "shutting_down"
    assert state.service.unready_code() == "shutting_down"
    assert state.service.slots.in_use == 0


async def test_start_when_pump_cancelled_before_it_ran_then_lease_still_released() -> None:
    state = make_state()
    run = await state.service.start(REQUEST, request_id="r1", authorization=None)
    assert run.stream is not None and run.stream.task is not None
    run.stream.task.cancel()  # before its first step: the events are never iterated
    with pytest.raises(asyncio.CancelledError):
        await run.stream.task
    await _settle()
    assert held(state) == (0, 0)


async def _settle() -> None:
    for _ in range(3):  # done callbacks run on the next loop iterations
        await asyncio.sleep(0)


async def test_start_when_pump_cancelled_before_it_ran_then_conversation_released(
    tmp_path: Path,
) -> None:
    from chat.conversations.service import Conversations

    state = make_state(data_dir=str(tmp_path))
    conversations = await Conversations.open(state.settings, state.backend)
    state.service.conversations = conversations
    try:
        turn = ChatRequest(message="hello", conversation_id="c1")
        run = await state.service.start(turn, request_id="r1", authorization=None)
        assert run.stream is not None and run.stream.task is not None
        run.stream.task.cancel()  # before its first step: the turn's own clean-up never runs
        with pytest.raises(asyncio.CancelledError):
            await run.stream.task
        again = None
        codes: list[str] = []
        for _ in range(50):  # bounded: the release runs as a task of its own
            await asyncio.sleep(0.01)
            try:
                again = await state.service.start(turn, request_id="r2", authorization=None)
                break
            except ChatError as busy:
                codes.append(busy.code)
        assert again is not None, "the conversation stayed locked"
        assert set(codes) <= {"conversation_busy"}
        await read_to_end(state, again)
        assert held(state) == (0, 0)
    finally:
        await conversations.aclose()
