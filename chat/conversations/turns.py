"""The items a conversation stores, and how they group into turns.

A turn is the user's message, then the answer text the user saw (absent when none arrived). Both
are saved as the Responses API's easy input messages (``{"role", "content"}`` with a string),
which the Agents SDK, Chat Completions, Responses and the local model all take as history.
Reading also accepts the SDK's own message items (content as a list of text parts), in case a
store holds items written by the Runner itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

Item = dict[str, Any]

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_decode: Final = msgspec.json.Decoder().decode


def user_item(text: str) -> Item:
    """The stored form of the user's message."""
    return {"role": "user", "content": text}


def assistant_item(text: str) -> Item:
    """The stored form of the answer text that was delivered."""
    return {"role": "assistant", "content": text}


def turn_items(message: str, answer: str) -> list[Item]:
    """What one turn saves: the message, plus the answer when any text was delivered."""
    if answer:
        return [user_item(message), assistant_item(answer)]
    return [user_item(message)]


def role_of(item: Any) -> str | None:
    """``user`` or ``assistant`` for a message item; None for anything else."""
    if not isinstance(item, Mapping):
        return None
    if item.get("type", "message") != "message":
        return None
    role = item.get("role")
    return role if role in ("user", "assistant") else None


def text_of(item: Mapping[str, Any]) -> str:
    """The text of a message item: a string content, or its text parts joined."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") in _TEXT_PARTS
        )
    return ""


def messages_of(items: Iterable[Any]) -> list[dict[str, str]]:
    """``[{"role", "text"}]`` for ``GET /conversations/{id}``, oldest first."""
    messages: list[dict[str, str]] = []
    for item in items:
        role = role_of(item)
        if role is not None:
            messages.append({"role": role, "text": text_of(item)})
    return messages


def group_turns(items: Sequence[Any]) -> list[list[Any]]:
    """Items grouped into turns, each starting with a user message.

    Items before the first user message (an answer whose question fell outside a window of
    newest items) belong to no whole turn and are left out; non-message items are left out too.
    """
    turns: list[list[Any]] = []
    for item in items:
        role = role_of(item)
        if role == "user":
            turns.append([item])
        elif role == "assistant" and turns:
            turns[-1].append(item)
    return turns


def item_bytes(items: Iterable[Any]) -> int:
    """UTF-8 bytes of the texts of ``items``: what the per-conversation byte limit counts."""
    return sum(len(text_of(item).encode()) for item in items if isinstance(item, Mapping))


def decode_items(raw: Iterable[bytes | str]) -> list[Any]:
    """Stored items (one JSON text each, as the SDK's sessions write them), oldest first; what
    is not JSON is skipped, as the sessions' ``get_items`` does."""
    items: list[Any] = []
    for data in raw:
        try:
            items.append(_decode(data))
        except msgspec.DecodeError:
            continue
    return items
