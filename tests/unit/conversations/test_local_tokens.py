"""The local model's history budget, counted through the engine's public prompt counter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chat.conversations.local_tokens import FRAME_TOKENS, LocalTokenBudget, local_token_budget
from chat.conversations.turns import user_item

pytestmark = pytest.mark.anyio


class Counter:
    """A stand-in tokenizer: 10 tokens of template and instructions, one per word."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, instructions: str | None, message: str) -> int:
        self.calls += 1
        return 10 + len((instructions or "").split()) + len(message.split())


async def test_room_when_asked_then_context_minus_answer_minus_prompt() -> None:
    budget = LocalTokenBudget(Counter(), context=100, answer_tokens=30)
    assert await budget.room_for_history("be brief", "one two three") == 100 - 30 - 15


async def test_item_tokens_when_counted_then_text_plus_frame_and_cached() -> None:
    counter = Counter()
    budget = LocalTokenBudget(counter, context=100, answer_tokens=30)
    assert await budget.item_tokens(None, user_item("a b c")) == 3 + FRAME_TOKENS
    calls = counter.calls
    assert await budget.item_tokens(None, user_item("a b c")) == 3 + FRAME_TOKENS
    assert counter.calls == calls  # the second count came from the cache


def test_local_token_budget_when_backend_has_no_counter_then_none() -> None:
    fake = SimpleNamespace(engine=None, model_settings=SimpleNamespace(max_tokens=None))
    assert local_token_budget(fake, context=2048) is None


def test_local_token_budget_when_engine_counts_then_answer_room_is_max_tokens() -> None:
    engine = SimpleNamespace(count_prompt_tokens=Counter())
    backend = SimpleNamespace(engine=engine, model_settings=SimpleNamespace(max_tokens=512))
    budget = local_token_budget(backend, context=2048)
    assert budget is not None
    assert (budget.context, budget.answer_tokens) == (2048, 512)
