"""Which turns go to the model: the newest whole turns, by count, then by a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from chat.conversations.trimming import HistoryCosts, history_window_size, newest_turns
from chat.conversations.turns import assistant_item, text_of, turn_items

pytestmark = pytest.mark.anyio


def conversation(turns: int) -> list[Any]:
    return [item for i in range(turns) for item in turn_items(f"u{i}", f"a{i}")]


class WordBudget:
    """One token per word plus one per message; ``room`` tokens for history."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.asked: list[str] = []

    async def measure(
        self, instructions: str | None, message: str, items: Sequence[Any]
    ) -> HistoryCosts:
        self.asked.append(message)
        return HistoryCosts(self.room, [len(text_of(item).split()) + 1 for item in items])


async def test_newest_turns_when_more_than_max_then_newest_kept_in_order() -> None:
    window = await newest_turns(conversation(200), max_turns=50)
    assert window.turns_sent == 50
    assert window.turns_dropped == 150
    assert window.items == conversation(200)[-100:]
    assert window.items[0] == {"role": "user", "content": "u150"}


async def test_newest_turns_when_zero_max_then_no_history() -> None:
    window = await newest_turns(conversation(3), max_turns=0)
    assert window.items == []
    assert window.turns_dropped == 3


async def test_newest_turns_when_budget_tight_then_only_whole_turns_that_fit() -> None:
    # Each turn costs 4 (two one-word messages at 2 each); 9 tokens hold two turns.
    budget = WordBudget(room=9)
    window = await newest_turns(conversation(5), max_turns=50, budget=budget, message="new")
    assert window.items == conversation(5)[-4:]
    assert (window.turns_sent, window.turns_dropped) == (2, 3)
    assert budget.asked == ["new"]


async def test_newest_turns_when_newest_turn_alone_too_big_then_none_sent() -> None:
    items = [*conversation(2), *turn_items("u2", "a " * 50)]
    window = await newest_turns(items, max_turns=50, budget=WordBudget(room=20))
    assert window.items == []


async def test_newest_turns_when_no_room_left_then_none_sent() -> None:
    window = await newest_turns(conversation(2), max_turns=50, budget=WordBudget(room=-5))
    assert window.items == []
    assert window.turns_sent == 0


async def test_newest_turns_when_window_begins_with_an_answer_then_it_is_dropped() -> None:
    items = [assistant_item("orphan"), *conversation(1)]
    window = await newest_turns(items, max_turns=50)
    assert window.items == conversation(1)


def test_history_window_size_when_turns_given_then_two_items_each() -> None:
    assert history_window_size(50) == 100
