"""The local model's history budget: exact per-message costs from the engine's prompt counter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace

import anyio
import pytest

from chat.conversations.local_tokens import LocalTokenBudget, local_token_budget
from chat.conversations.turns import assistant_item, turn_items, user_item
from chat.models.local.jobs import Finished, SamplingParams
from chat.models.local.model import LocalEngine, to_chat_messages
from chat.settings import DEFAULT_INSTRUCTIONS
from tests.support.local_engine import STEP_TIMEOUT_S, loaded_engine

pytestmark = pytest.mark.anyio


class Counter:
    """A stand-in tokenizer: 3 tokens of framing per message, one per word."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, prompts: Sequence[Sequence[dict[str, str]]]) -> list[int]:
        self.calls.append(len(prompts))
        return [sum(3 + len(m["content"].split()) for m in prompt) for prompt in prompts]


async def test_measure_when_asked_then_room_is_context_minus_answer_minus_prompt() -> None:
    budget = LocalTokenBudget(Counter(), context=100, answer_tokens=30)
    measured = await budget.measure("be brief", "one two three", [])
    # system: 3 + 2 words; user: 3 + 3 words
    assert measured.room == 100 - 30 - 11
    assert measured.costs == []


async def test_measure_when_items_given_then_each_costs_its_framing_and_words() -> None:
    budget = LocalTokenBudget(Counter(), context=100, answer_tokens=30)
    measured = await budget.measure(None, "q", [user_item("a b c"), assistant_item("d")])
    assert measured.costs == [3 + 3, 3 + 1]


async def test_measure_when_items_seen_before_then_only_the_new_ones_are_counted() -> None:
    counter = Counter()
    budget = LocalTokenBudget(counter, context=100, answer_tokens=30)
    items = turn_items("a b", "c")
    await budget.measure(None, "q1", items)
    assert counter.calls == [1 + 1 + 2]  # the prompt, the probe, two messages, in one call
    more = [*items, *turn_items("e", "f g")]
    measured = await budget.measure(None, "q2", more)
    assert counter.calls[1:] == [1 + 2]  # the prompt and the two new messages
    assert measured.costs == [5, 4, 4, 5]


def test_local_token_budget_when_backend_has_no_counter_then_none() -> None:
    fake = SimpleNamespace(engine=None, model_settings=SimpleNamespace(max_tokens=None))
    assert local_token_budget(fake, context=2048) is None


def test_local_token_budget_when_engine_counts_then_answer_room_is_max_tokens() -> None:
    engine = SimpleNamespace(count_prompts=Counter())
    backend = SimpleNamespace(engine=engine, model_settings=SimpleNamespace(max_tokens=512))
    budget = local_token_budget(backend, context=2048)
    assert budget is not None
    assert (budget.context, budget.answer_tokens) == (2048, 512)


# --- on the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LocalEngine]:
    async with loaded_engine(max_output_tokens=8) as loaded:
        yield loaded


@pytest.mark.local_model
async def test_measure_when_summed_then_equals_the_prompt_the_model_evaluates(
    engine: LocalEngine,
) -> None:
    # Texts that tempt a tokenizer to merge across message boundaries: leading and trailing
    # spaces and newlines, punctuation, non-ASCII, an empty answer's neighbour.
    texts = [
        ("My name is Ada.", "Nice to meet you, Ada!"),
        ("  spaced  ", "\nnewline first\n"),
        ("¿Qué tal? 日本語 ümlaut", "ok."),
        ("What is 2+2?", "4"),
        ("end with a space ", " start with one"),
    ]
    items = [item for question, answer in texts for item in turn_items(question, answer)]
    message = "What is my name?"
    budget = LocalTokenBudget(engine.count_prompts, context=2048, answer_tokens=8)
    with anyio.fail_after(STEP_TIMEOUT_S):
        measured = await budget.measure(DEFAULT_INSTRUCTIONS, message, items)
        messages = to_chat_messages(DEFAULT_INSTRUCTIONS, [*items, user_item(message)])
        finished = [
            piece
            async for piece in engine.generate(messages, SamplingParams(max_tokens=1))
            if isinstance(piece, Finished)
        ]
    without_history = 2048 - 8 - measured.room
    assert without_history + sum(measured.costs) == finished[0].prompt_tokens
    # And for every prefix of whole turns the trimming may send, not just the whole history.
    for turns in range(len(texts)):
        prefix = items[len(items) - 2 * turns :] if turns else []
        with anyio.fail_after(STEP_TIMEOUT_S):
            expected = await engine.count_message_tokens(
                to_chat_messages(DEFAULT_INSTRUCTIONS, [*prefix, user_item(message)])
            )
        assert without_history + sum(measured.costs[len(items) - len(prefix) :]) == expected
