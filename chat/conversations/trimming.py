"""Which turns of a conversation go to the model: the newest, by count and then by tokens.

Oldest turns go first, whole turns at a time (never a question without its answer). The stored
history is never changed: this only picks what one run sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from chat.conversations.turns import group_turns


class HistoryCosts(msgspec.Struct, frozen=True):
    """What a model's context leaves for history, and what each history item would take."""

    room: int  # tokens left once the instructions, the message and the answer fit
    costs: list[int]  # tokens each item adds to the prompt, chat-template framing included


class TokenBudget(Protocol):
    """A model's context, as far as history is concerned."""

    async def measure(
        self, instructions: str | None, message: str, items: Sequence[Any]
    ) -> HistoryCosts:
        """The room for history before ``message``, and the cost of each of ``items``."""


class HistoryWindow(msgspec.Struct, frozen=True):
    """The history one run sends, and how much of the stored history it left out."""

    items: list[Any]
    turns_sent: int
    turns_dropped: int


def history_window_size(max_turns: int) -> int:
    """Items to read for ``max_turns`` turns: a turn is at most two items."""
    return 2 * max_turns


async def newest_turns(
    items: Sequence[Any],
    *,
    max_turns: int,
    budget: TokenBudget | None = None,
    instructions: str | None = None,
    message: str = "",
) -> HistoryWindow:
    """The newest whole turns of ``items``, at most ``max_turns``, that fit ``budget``."""
    turns = group_turns(items)
    total = len(turns)
    kept = turns[-max_turns:] if max_turns > 0 else []
    if budget is not None and kept:
        measured = await budget.measure(instructions, message, [i for turn in kept for i in turn])
        room = measured.room
        costs = reversed(measured.costs)
        fitting = 0
        for turn in reversed(kept):
            cost = sum(next(costs) for _ in turn)
            if cost > room:
                break
            room -= cost
            fitting += 1
        kept = kept[len(kept) - fitting :]
    flat = [item for turn in kept for item in turn]
    return HistoryWindow(items=flat, turns_sent=len(kept), turns_dropped=total - len(kept))
