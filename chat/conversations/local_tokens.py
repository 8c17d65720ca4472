"""The local model's token budget for history, counted with its own tokenizer.

The engine's public counter takes one user message (``count_prompt_tokens(instructions,
message)``, chat template applied). A history message's cost is then its text's tokens (the
prompt with it as the message, minus the prompt with an empty message) plus the template's
per-message framing, which this estimates from above (``FRAME_TOKENS``). An exact count of a
whole message list would need a ``count_messages_tokens`` on the engine; until it has one, an
estimate that errs high only sends a turn less. The engine still refuses a prompt that does not
fit, and caps the answer at what is left.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from chat.conversations.turns import text_of

# ChatML frames a message with <|im_start|>, the role, a newline, <|im_end|> and a newline (5);
# Llama 3 and Gemma templates with about as many. Rounded up, so the estimate errs high.
FRAME_TOKENS: Final = 8
CACHE_SIZE: Final = 4096

CountPromptTokens = Callable[[str | None, str], Awaitable[int]]


class LocalTokenBudget:
    """``TokenBudget`` for a model of ``context`` tokens that keeps ``answer_tokens`` free."""

    def __init__(self, count: CountPromptTokens, *, context: int, answer_tokens: int) -> None:
        self._count = count
        self.context = context
        self.answer_tokens = answer_tokens
        # Counting runs the chat template and the tokenizer in a thread (~0.1-1 ms a message);
        # a conversation sends the same history again every turn, so counts are kept, by digest.
        self._cache: collections.OrderedDict[bytes, int] = collections.OrderedDict()

    async def room_for_history(self, instructions: str | None, message: str) -> int:
        """The context minus the prompt without history and the room kept for the answer."""
        prompt = await self._count(instructions, message)
        return self.context - self.answer_tokens - prompt

    async def item_tokens(self, instructions: str | None, item: Any) -> int:
        """The item's text tokens plus the template's framing of one message."""
        text = text_of(item) if isinstance(item, dict) else ""
        return await self._text_tokens(instructions, text) + FRAME_TOKENS

    async def _text_tokens(self, instructions: str | None, text: str) -> int:
        key = hashlib.blake2b(f"{instructions or ''}\x00{text}".encode(), digest_size=16).digest()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        empty = await self._empty_prompt(instructions)
        tokens = max(0, await self._count(instructions, text) - empty)
        self._cache[key] = tokens
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return tokens

    async def _empty_prompt(self, instructions: str | None) -> int:
        key = hashlib.blake2b(f"{instructions or ''}\x01".encode(), digest_size=16).digest()
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = await self._count(instructions, "")
        return cached


def local_token_budget(backend: Any, *, context: int) -> LocalTokenBudget | None:
    """The budget of a backend whose engine counts prompt tokens; None for the others."""
    engine = getattr(backend, "engine", None)
    count = getattr(engine, "count_prompt_tokens", None)
    if count is None:
        return None
    answer_tokens = backend.model_settings.max_tokens or 0
    return LocalTokenBudget(count, context=context, answer_tokens=answer_tokens)
