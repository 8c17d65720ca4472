"""A turn saves what the user saw, whatever ends the run, on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from chat.conversations.service import Conversations
from chat.conversations.sqlite_store import SQLiteConversationStore
from chat.conversations.store import ConversationBusy, Limits, StoreUnavailable
from chat.conversations.turns import turn_items
from chat.events import ChatEvent, Delta, Done, Error, Usage

pytestmark = pytest.mark.anyio

DONE = Done(finish_reason="stop", usage=Usage(1, 2, 3), request_id="r1")
FAILED = Error(code="upstream_error", message="m", retryable=True, request_id="r1")


@pytest.fixture
async def conversations(tmp_path: Path) -> AsyncIterator[Conversations]:
    store = await SQLiteConversationStore.open(tmp_path, Limits())
    service = Conversations(store, secret=b"s" * 32, history_max_turns=50, instructions=None)
    try:
        yield service
    finally:
        await service.aclose()


async def run(*events: ChatEvent) -> AsyncIterator[ChatEvent]:
    for event in events:
        yield event


async def history(conversations: Conversations, conversation_id: str) -> list[dict[str, str]]:
    return await conversations.read(conversation_id, "me")


async def test_done_when_run_completes_then_turn_saved_before_terminal_event(
    conversations: Conversations,
) -> None:
    turn = await conversations.begin("c1", "me", "hi")
    seen: list[ChatEvent] = []
    async with aclosing(turn.events(run(Delta("Hel"), Delta("lo"), DONE))) as events:
        async for event in events:
            if type(event) is Done:
                # A client holding `done` may send the next turn at once: saved and unlocked.
                assert await history(conversations, "c1") == [
                    {"role": "user", "text": "hi"},
                    {"role": "assistant", "text": "Hello"},
                ]
                nxt = await conversations.begin("c1", "me", "again")
                assert nxt.history.items == turn_items("hi", "Hello")
                await nxt.abandon()
            seen.append(event)
    assert seen[-1] == Done(
        finish_reason="stop", usage=Usage(1, 2, 3), request_id="r1", conversation_id="c1"
    )


async def test_error_when_cut_after_deltas_then_delivered_text_saved(
    conversations: Conversations,
) -> None:
    turn = await conversations.begin("c1", "me", "hi")
    async with aclosing(turn.events(run(Delta("par"), Delta("tial"), FAILED))) as events:
        seen = [event async for event in events]
    assert seen[-1] == Error(
        code="upstream_error", message="m", retryable=True, request_id="r1", conversation_id="c1"
    )
    assert await history(conversations, "c1") == [
        {"role": "user", "text": "hi"},
        {"role": "assistant", "text": "partial"},
    ]


async def test_error_when_no_text_arrived_then_message_alone_saved(
    conversations: Conversations,
) -> None:
    turn = await conversations.begin("c1", "me", "hi")
    async with aclosing(turn.events(run(FAILED))) as events:
        _ = [event async for event in events]
    assert await history(conversations, "c1") == [{"role": "user", "text": "hi"}]


async def test_reader_when_it_stops_early_then_what_it_passed_on_is_saved(
    conversations: Conversations,
) -> None:
    turn = await conversations.begin("c1", "me", "hi")
    events = turn.events(run(Delta("a"), Delta("b"), Delta("c"), DONE))
    async with aclosing(events):
        assert await anext(events) == Delta("a")
        assert await anext(events) == Delta("b")
    assert await history(conversations, "c1") == [
        {"role": "user", "text": "hi"},
        {"role": "assistant", "text": "ab"},
    ]
    await (await conversations.begin("c1", "me", "next")).abandon()  # the lock was released


async def test_abandon_when_run_never_started_then_lock_free_and_nothing_saved(
    conversations: Conversations,
) -> None:
    turn = await conversations.begin("c1", "me", "hi")
    with pytest.raises(ConversationBusy):
        await conversations.begin("c1", "me", "too soon")
    await turn.abandon()
    assert await history(conversations, "c1") == []
    await (await conversations.begin("c1", "me", "now")).abandon()


async def test_run_session_when_runner_saves_then_nothing_is_written(
    conversations: Conversations,
) -> None:
    turn = await conversations.begin("c1", "me", "hi")
    await turn.run_session.add_items([{"role": "user", "content": "sdk's own copy"}])
    assert await turn.run_session.pop_item() is None
    assert await turn.run_session.get_items() == []
    await turn.abandon()
    assert await history(conversations, "c1") == []


class FailingSave(SQLiteConversationStore):
    async def save(self, *args: Any, **kwargs: Any) -> bool:
        raise StoreUnavailable("conversation database: OperationalError")


async def test_save_when_store_fails_then_done_becomes_store_unavailable(tmp_path: Path) -> None:
    store = await FailingSave.open(tmp_path, Limits())
    conversations = Conversations(store, secret=b"s" * 32, history_max_turns=5, instructions=None)
    try:
        turn = await conversations.begin("c1", "me", "hi")
        async with aclosing(turn.events(run(Delta("x"), DONE))) as events:
            seen = [event async for event in events]
        assert seen[-1] == Error(
            code="store_unavailable",
            message="A data store is unavailable; retry shortly.",
            retryable=True,
            request_id="r1",
            conversation_id="c1",
        )
        # The lock was released even so: the next turn is not refused as busy.
        await (await conversations.begin("c1", "me", "again")).abandon()
    finally:
        await conversations.aclose()
