"""A deterministic Agents SDK ``Model`` for tests, demos and load tests.

``agents.testing.ScriptedModel`` runs out of steps and keeps a copy of every call; this one takes
any number of calls and holds no per-call state.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any, Final

from agents import ModelSettings
from openai.types.responses import ResponseStreamEvent

from chat.models.sdk_events import (
    StreamedModel,
    completed_event,
    created_event,
    text_delta_event,
)

_WORDS: Final = [
    "This",
    "is",
    "a",
    "deterministic",
    "answer",
    "from",
    "the",
    "fake",
    "model,",
    "streamed",
    "one",
    "token",
    "at",
    "a",
    "time",
    "so",
    "that",
    "clients,",
    "tests",
    "and",
    "load",
    "generators",
    "see",
    "a",
    "predictable",
    "text.",
]


def fake_tokens(count: int) -> list[str]:
    """The token texts the fake model produces; their concatenation is the answer."""
    cycle = itertools.cycle(_WORDS)
    return [word if i == 0 else " " + word for i, word in zip(range(count), cycle, strict=False)]


def count_input_tokens(system_instructions: str | None, input: str | list[Any]) -> int:
    """A stable stand-in for a tokenizer: whitespace-separated words, at least one."""
    words = len(system_instructions.split()) if system_instructions else 0
    if isinstance(input, str):
        words += len(input.split())
    else:
        for item in input:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, str):
                words += len(content.split())
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str):
                        words += len(text.split())
    return max(words, 1)


class FakeModel(StreamedModel):
    """Streams ``tokens`` deterministic tokens, ``delay_s`` apart."""

    def __init__(self, *, tokens: int = 64, delay_s: float = 0.0, name: str = "fake") -> None:
        self._tokens = fake_tokens(tokens)
        self._text = "".join(self._tokens)
        self._delay_s = delay_s
        self._name = name

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings,
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[ResponseStreamEvent]:
        tokens = self._tokens
        limit = model_settings.max_tokens
        finish_reason: Any = "stop"
        if limit is not None and limit < len(tokens):
            tokens = tokens[:limit]
            finish_reason = "length"
        text = self._text if tokens is self._tokens else "".join(tokens)
        yield created_event("resp_fake", self._name)
        delay = self._delay_s
        sequence = 1
        for token in tokens:
            if delay:
                await asyncio.sleep(delay)
            yield text_delta_event(token, sequence)
            sequence += 1
        yield completed_event(
            response_id="resp_fake",
            model=self._name,
            text=text,
            input_tokens=count_input_tokens(system_instructions, input),
            output_tokens=len(tokens),
            sequence_number=sequence,
            finish_reason=finish_reason,
        )
