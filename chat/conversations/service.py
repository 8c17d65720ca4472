"""What the app holds for conversations: begin a turn, read one, delete one, and the upkeep.

``Conversations.open`` picks the store (Redis with ``REDIS_URL``, else the SQLite file under
``CHAT_DATA_DIR``) and the history budget (the local model's tokenizer, when that is the
backend); ``maintain`` renews held locks and purges expired conversations where the store does
not expire them by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any, Final

import structlog
from redis.exceptions import RedisError

from chat.conversations.local_tokens import local_token_budget
from chat.conversations.locks import LockKeeper
from chat.conversations.ownership import bearer_token, owner_of
from chat.conversations.store import (
    ConversationNotFound,
    ConversationStore,
    Limits,
    StoreUnavailable,
)
from chat.conversations.trimming import TokenBudget, history_window_size, newest_turns
from chat.conversations.turn import ConversationTurn
from chat.conversations.turns import messages_of
from chat.settings import Settings, SettingsError

log = structlog.get_logger(__name__)

# How often expired conversations are looked for, at most and at least.
PURGE_EVERY_MAX_S: Final = 300.0
PURGE_EVERY_MIN_S: Final = 0.5
# The SDK sessions' own errors, when they reach us unwrapped.
SESSION_ERRORS: Final = (sqlite3.Error, RedisError, OSError, TimeoutError)


def limits_from(settings: Settings) -> Limits:
    """The per-conversation bounds and lifetimes the settings ask for."""
    return Limits(
        max_turns=settings.conversation_max_turns,
        max_bytes=settings.conversation_max_bytes,
        ttl_s=settings.conversation_ttl_s,
        lock_ttl_s=settings.conversation_lock_ttl_s,
    )


def check_data_dir(settings: Settings) -> None:
    """At start-up: without Redis, CHAT_DATA_DIR must be a directory we can write the file in."""
    if settings.redis_url:
        return
    from chat.conversations.sqlite_file import prepare_data_dir

    try:
        prepare_data_dir(settings.data_dir)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(
            f"CHAT_DATA_DIR: expected a writable directory, {settings.data_dir!r}: {reason}"
        ) from None


class Conversations:
    """Conversation turns, reads and deletes over one store."""

    def __init__(
        self,
        store: ConversationStore,
        *,
        secret: bytes,
        history_max_turns: int,
        instructions: str | None,
        budget: TokenBudget | None = None,
    ) -> None:
        self.store = store
        self.history_max_turns = history_max_turns
        self.instructions = instructions
        self.budget = budget
        self.keeper = LockKeeper()
        self._secret = secret

    @classmethod
    async def open(cls, settings: Settings, backend: Any) -> Conversations:
        """The store the settings name, its owner secret, and the backend's history budget."""
        limits = limits_from(settings)
        store: ConversationStore
        if settings.redis_url:
            from chat.conversations.redis_store import RedisConversationStore

            store = RedisConversationStore.from_url(settings.redis_url, limits)
        else:
            from chat.conversations.sqlite_store import SQLiteConversationStore

            store = await SQLiteConversationStore.open(settings.data_dir, limits)
        try:
            secret = await store.secret()
        except BaseException:
            await store.aclose()
            raise
        log.info(
            "conversation_store_opened",
            store="redis" if settings.redis_url else "sqlite",
            history_max_turns=settings.history_max_turns,
            ttl_s=limits.ttl_s,
        )
        return cls(
            store,
            secret=secret,
            history_max_turns=settings.history_max_turns,
            instructions=settings.instructions,
            budget=local_token_budget(backend, context=settings.local_context),
        )

    def owner_for(self, authorization: str | None) -> str:
        """The owner id of the caller presenting ``authorization`` (already authorized)."""
        return owner_of(self._secret, bearer_token(authorization))

    async def begin(self, conversation_id: str, owner: str, message: str) -> ConversationTurn:
        """Claim the conversation for one run and load the history it sends to the model."""
        store = self.store
        limit = history_window_size(self.history_max_turns)
        claim = await store.claim(conversation_id, owner, len(message.encode()), limit)
        self.keeper.hold(conversation_id, claim.token)
        session = None
        try:
            session = await store.open_session(conversation_id)
            if claim.stale:
                try:
                    await session.clear_session()
                except SESSION_ERRORS as exc:
                    raise StoreUnavailable(f"conversation session: {type(exc).__name__}") from None
            history = await newest_turns(
                claim.history,
                max_turns=self.history_max_turns,
                budget=self.budget,
                instructions=self.instructions,
                message=message,
            )
        except BaseException:
            self.keeper.drop(conversation_id)
            with contextlib.suppress(StoreUnavailable):  # else the lock expires by itself
                await store.release(conversation_id, claim.token)
            if session is not None:
                await store.close_session(session)
            raise
        return ConversationTurn(
            conversation_id=conversation_id,
            owner=owner,
            message=message,
            token=claim.token,
            store=store,
            session=session,
            history=history,
            keeper=self.keeper,
        )

    async def read(self, conversation_id: str, owner: str) -> list[dict[str, str]]:
        """Every message, oldest first; ``ConversationNotFound`` for unknown, expired, or not
        the caller's."""
        if not await self.store.owned(conversation_id, owner):
            raise ConversationNotFound(conversation_id)
        session = await self.store.open_session(conversation_id)
        try:
            items = await session.get_items()
        except SESSION_ERRORS as exc:
            raise StoreUnavailable(f"conversation session: {type(exc).__name__}") from None
        finally:
            await self.store.close_session(session)
        return messages_of(items)

    async def delete(self, conversation_id: str, owner: str) -> None:
        """Remove the conversation; ``ConversationNotFound`` or ``ConversationBusy``."""
        try:
            await self.store.delete(conversation_id, owner)
        except SESSION_ERRORS as exc:
            raise StoreUnavailable(f"conversation session: {type(exc).__name__}") from None

    async def maintain(self) -> None:
        """Renew held locks every third of their lifetime; purge expired conversations."""
        limits = self.store.limits
        purge_every = min(max(limits.ttl_s / 4, PURGE_EVERY_MIN_S), PURGE_EVERY_MAX_S)
        tick = min(limits.lock_ttl_s / 3, purge_every)
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + purge_every
        while True:
            await asyncio.sleep(tick)
            await self.keeper.renew(self.store)
            if loop.time() < next_purge:
                continue
            next_purge = loop.time() + purge_every
            try:
                purged = await self.store.purge_expired()
            except (StoreUnavailable, *SESSION_ERRORS) as exc:
                log.warning("conversation_purge_failed", error_type=type(exc).__name__)
                continue
            if purged:
                log.info("conversations_purged", purged=purged)

    async def aclose(self) -> None:
        """Close the store's connections."""
        await self.store.aclose()
