"""What a conversation store does besides the SDK ``Session``: ownership, one run at a time,
limits and expiry. ``SQLiteConversationStore`` and ``RedisConversationStore`` implement it.

The history itself lives in the Agents SDK's own session (``SQLiteSession`` in the same file,
``RedisSession`` in the same Redis); the store keeps, per conversation, a small record next to
it: the owner's keyed hash, the number of turns and bytes saved, when the last turn was, and the
lock of the run that holds it. The lock has a lifetime and is renewed while its run lasts, so a
worker that dies cannot hold a conversation for ever.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from agents.memory import Session


class ConversationNotFound(Exception):
    """No such conversation, an expired one, or one that belongs to another key."""


class ConversationBusy(Exception):
    """Another run holds the conversation."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("conversation busy")
        self.retry_after_s = retry_after_s


class ConversationFull(Exception):
    """The conversation reached its turn or byte limit."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"conversation holds its limit of {limit} {what}")
        self.what = what
        self.limit = limit


class StoreUnavailable(Exception):
    """The store could not be reached or failed; the message names no key and no text."""


# Everything a conversation call raises that the HTTP edge turns into a contract error.
CONVERSATION_ERRORS = (ConversationNotFound, ConversationBusy, ConversationFull, StoreUnavailable)


class Limits(msgspec.Struct, frozen=True):
    """Per-conversation bounds, and the lifetimes of conversations and locks."""

    max_turns: int = 1000
    max_bytes: int = 4 * 1024 * 1024
    ttl_s: float = 604_800.0
    lock_ttl_s: float = 30.0


class Claim(msgspec.Struct, frozen=True):
    """A held conversation: the lock's token, whether it has no earlier turns, whether items
    of an expired one may still be in the session (to be cleared before the run), and the
    newest items of its history when asked for (read with the claim, in one step)."""

    token: str
    fresh: bool
    stale: bool
    turns: int
    history: list[Any] = msgspec.field(default_factory=list)


class ConversationStore(Protocol):
    """Conversation records and locks; every method is safe from any worker."""

    limits: Limits

    async def open_session(self, conversation_id: str) -> Session:
        """The SDK session holding the conversation's items."""

    async def close_session(self, session: Session) -> None:
        """Release what ``open_session`` opened."""

    async def claim(
        self, conversation_id: str, owner: str, add_bytes: int, history_limit: int = 0
    ) -> Claim:
        """Lock the conversation for one run (creating it when new), checking owner and limits,
        and read its newest ``history_limit`` items (none for a fresh or stale one).

        Raises ``ConversationNotFound`` (another owner), ``ConversationBusy``,
        ``ConversationFull`` or ``StoreUnavailable``.
        """

    async def renew(self, locks: list[tuple[str, str]]) -> list[str]:
        """Extend the locks ``(conversation_id, token)``; returns the ids whose lock was lost."""

    async def finish(
        self, conversation_id: str, token: str, *, owner: str, turns: int, add_bytes: int
    ) -> bool:
        """Count a saved turn, mark it as the latest, release the lock; False if it was lost."""

    async def save(
        self,
        conversation_id: str,
        token: str,
        session: Session,
        items: list[Any],
        *,
        owner: str,
        turns: int,
        add_bytes: int,
    ) -> bool:
        """Add ``items`` to ``session``, then ``finish``: a turn's save, in as few steps as can."""

    async def release(self, conversation_id: str, token: str) -> None:
        """Release the lock without a turn (the run never started)."""

    async def owned(self, conversation_id: str, owner: str) -> bool:
        """Whether the conversation exists, is live and belongs to ``owner``."""

    async def delete(self, conversation_id: str, owner: str) -> None:
        """Remove history and record; raises ``ConversationNotFound`` or ``ConversationBusy``."""

    async def secret(self) -> bytes:
        """The deployment's key for owner hashes, made once and kept in the store."""

    async def purge_expired(self) -> int:
        """Remove conversations idle past the TTL (where the store does not expire them)."""

    async def aclose(self) -> None:
        """Release connections."""
