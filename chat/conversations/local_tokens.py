"""The local model's token budget for history, counted exactly with its own tokenizer.

A history message's cost is what it adds to the prompt: the tokens of ``[system, message,
probe]`` minus those of ``[system, probe]`` (``probe`` an empty user message), chat template
and its framing included, counted by the engine (``count_prompts``) with the template and
tokenizer it generates with. The costs of a prompt's messages then add up to the prompt's
count, exactly, for templates that close every message with a special token (ChatML, which
SmolLM2 uses; Llama 3; Gemma): tokens never merge across one. A test holds this on the real
model. Costs are cached by a digest of the instructions, role and text, so a long conversation
counts only its new messages each turn, and those in one round trip to the worker.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from chat.conversations.trimming import HistoryCosts
from chat.conversations.turns import user_item
from chat.models.local.model import to_chat_messages

# Costs kept per process (a 16-byte key and an int each, ~1.5 MiB when full): the windows of a
# few hundred conversations of 50 turns.
CACHE_SIZE: Final = 16_384

# An empty user message after the one measured: a history message never ends the prompt.
_PROBE: Final = user_item("")

CountPrompts = Callable[[Sequence[Sequence[dict[str, str]]]], Awaitable[list[int]]]


class LocalTokenBudget:
    """``TokenBudget`` for a model of ``context`` tokens that keeps ``answer_tokens`` free."""

    def __init__(self, count: CountPrompts, *, context: int, answer_tokens: int) -> None:
        self._count = count
        self.context = context
        self.answer_tokens = answer_tokens
        self._cache: collections.OrderedDict[bytes, int] = collections.OrderedDict()

    async def measure(
        self, instructions: str | None, message: str, items: Sequence[Any]
    ) -> HistoryCosts:
        """The room for history, and each item's exact cost; new costs counted in one call."""
        messages = to_chat_messages(None, list(items))  # the conversion the model applies
        probe_key = _digest(instructions, "\x01probe", "")
        keys = [_digest(instructions, m["role"], m["content"]) for m in messages]
        known: dict[bytes, int] = {}
        for key in (probe_key, *keys):
            tokens = self._cache.get(key)
            if tokens is not None:
                self._cache.move_to_end(key)
                known[key] = tokens
        # The prompt without history first, then whatever is not known yet, each once.
        prompts = [to_chat_messages(instructions, [user_item(message)])]
        counting: dict[bytes, int] = {}
        if probe_key not in known:
            counting[probe_key] = len(prompts)
            prompts.append(to_chat_messages(instructions, [_PROBE]))
        for key, item in zip(keys, messages, strict=True):
            if key not in known and key not in counting:
                counting[key] = len(prompts)
                prompts.append(to_chat_messages(instructions, [item, _PROBE]))
        counts = await self._count(prompts)
        if probe_key in counting:
            known[probe_key] = counts[counting.pop(probe_key)]
            self._remember(probe_key, known[probe_key])
        for key, index in counting.items():
            known[key] = counts[index] - known[probe_key]
            self._remember(key, known[key])
        room = self.context - self.answer_tokens - counts[0]
        return HistoryCosts(room=room, costs=[known[key] for key in keys])

    def _remember(self, key: bytes, tokens: int) -> None:
        self._cache[key] = tokens
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)


def _digest(instructions: str | None, role: str, text: str) -> bytes:
    data = f"{instructions or ''}\x00{role}\x00{text}".encode()
    return hashlib.blake2b(data, digest_size=16).digest()


def local_token_budget(backend: Any, *, context: int) -> LocalTokenBudget | None:
    """The budget of a backend whose engine counts prompts; None for the others."""
    engine = getattr(backend, "engine", None)
    count = getattr(engine, "count_prompts", None)
    if count is None:
        return None
    answer_tokens = backend.model_settings.max_tokens or 0
    return LocalTokenBudget(count, context=context, answer_tokens=answer_tokens)
