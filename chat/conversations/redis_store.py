"""Conversations in Redis: the SDK's ``RedisSession`` for the items, plus two keys of ours.

The keys and the scripts that check and set them are in ``redis_scripts.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from agents.extensions.memory import RedisSession
from agents.memory import Session
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from chat.conversations import redis_scripts as scripts
from chat.conversations.store import (
    Claim,
    ConversationBusy,
    ConversationFull,
    ConversationNotFound,
    Limits,
    StoreUnavailable,
)
from chat.conversations.turns import decode_items
from chat.seams import redis_session_keys

T = TypeVar("T")

KEY_PREFIX: Final = "chat:conv:"
TIMEOUT_S: Final = 5.0


class RedisConversationStore:
    """``ConversationStore`` on Redis: any worker or replica continues any conversation."""

    def __init__(self, redis: Redis, limits: Limits, *, key_prefix: str = KEY_PREFIX) -> None:
        self.limits = limits
        self.key_prefix = key_prefix
        self._redis = redis
        self._lock_ms = max(1, round(limits.lock_ttl_s * 1000))
        self._ttl_ms = max(1, round(limits.ttl_s * 1000))
        self._claim = redis.register_script(scripts.CLAIM)
        self._finish = redis.register_script(scripts.FINISH)
        self._save = redis.register_script(scripts.SAVE)
        self._session_ttl_s = max(1, math.ceil(limits.ttl_s))
        self._renew = redis.register_script(scripts.RENEW)
        self._release = redis.register_script(scripts.RELEASE)
        self._lock_for_delete = redis.register_script(scripts.LOCK_FOR_DELETE)
        self._forget = redis.register_script(scripts.FORGET)

    @classmethod
    def from_url(
        cls, url: str, limits: Limits, *, key_prefix: str = KEY_PREFIX
    ) -> RedisConversationStore:
        """A client of its own; connections open on first use, each command bounded."""
        redis = Redis.from_url(
            url,
            socket_connect_timeout=TIMEOUT_S,
            # The SDK's session commands run inside its own cancellation-proof wrappers, so only
            # a socket timeout bounds them when Redis hangs.
            socket_timeout=TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        )
        return cls(redis, limits, key_prefix=key_prefix)

    def _session_prefix(self) -> str:
        return f"{self.key_prefix}session"

    def _session_keys(self, conversation_id: str) -> list[str]:
        """RedisSession's keys for the conversation (its layout: chat.seams)."""
        return redis_session_keys(self._session_prefix(), conversation_id)

    def _keys(self, conversation_id: str) -> list[str]:
        prefix = self.key_prefix
        return [f"{prefix}meta:{conversation_id}", f"{prefix}lock:{conversation_id}"]

    async def _bounded(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(TIMEOUT_S * 2):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"conversation store: {type(exc).__name__}") from None

    async def open_session(self, conversation_id: str) -> Session:
        return RedisSession(
            conversation_id,
            redis_client=self._redis,
            key_prefix=self._session_prefix(),
            ttl=self._session_ttl_s,
        )

    async def close_session(self, session: Session) -> None:
        return None  # the client is ours and shared: nothing per session

    async def claim(
        self, conversation_id: str, owner: str, add_bytes: int, history_limit: int = 0
    ) -> Claim:
        limits = self.limits
        token = secrets.token_hex(16)
        args: list[Any] = [
            owner,
            token,
            self._lock_ms,
            limits.max_turns,
            limits.max_bytes,
            add_bytes,
            self._ttl_ms,
            max(0, history_limit),
        ]
        messages = self._session_keys(conversation_id)[1]
        status, value, *rest = await self._bounded(
            self._claim(keys=[*self._keys(conversation_id), messages], args=args)
        )
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status == "not_found":
            raise ConversationNotFound(conversation_id)
        if status == "busy":
            raise ConversationBusy(max(int(value), 0) / 1000)
        if status == "full_turns":
            raise ConversationFull("turns", limits.max_turns)
        if status == "full_bytes":
            raise ConversationFull("bytes", limits.max_bytes)
        fresh = status == "fresh"
        history = decode_items(rest[0]) if rest and not fresh else []
        # A new record cannot tell a new conversation from an expired one whose items outlived
        # it by a moment: clear the items before the first run.
        return Claim(token=token, fresh=fresh, stale=fresh, turns=int(value), history=history)

    async def renew(self, locks: list[tuple[str, str]]) -> list[str]:
        if not locks:
            return []

        async def renew_all() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for conversation_id, token in locks:
                await self._renew(
                    keys=[self._keys(conversation_id)[1]], args=[token, self._lock_ms], client=pipe
                )
            return list(await pipe.execute())

        results = await self._bounded(renew_all())
        return [cid for (cid, _), ok in zip(locks, results, strict=True) if not ok]

    async def finish(
        self, conversation_id: str, token: str, *, owner: str, turns: int, add_bytes: int
    ) -> bool:
        held = await self._bounded(
            self._finish(
                keys=self._keys(conversation_id),
                args=[token, owner, turns, add_bytes, self._ttl_ms],
            )
        )
        return bool(held)

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
        keys = [*self._keys(conversation_id), *self._session_keys(conversation_id)]
        args: list[Any] = [
            token, owner, turns, add_bytes, self._ttl_ms,
            self._session_ttl_s * 1000, conversation_id,
            # Byte for byte what RedisSession._serialize_item writes.
            *(json.dumps(item, separators=(",", ":")) for item in items),
        ]  # fmt: skip
        held = await self._bounded(self._save(keys=keys, args=args))
        return bool(held)

    async def release(self, conversation_id: str, token: str) -> None:
        await self._bounded(self._release(keys=[self._keys(conversation_id)[1]], args=[token]))

    async def owned(self, conversation_id: str, owner: str) -> bool:
        value = await self._bounded(self._redis.hget(self._keys(conversation_id)[0], "owner"))
        return value is not None and value == owner.encode()

    async def delete(self, conversation_id: str, owner: str) -> None:
        token = secrets.token_hex(16)
        keys = self._keys(conversation_id)
        status, value = await self._bounded(
            self._lock_for_delete(keys=keys, args=[owner, token, self._lock_ms])
        )
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status == "not_found":
            raise ConversationNotFound(conversation_id)
        if status == "busy":
            raise ConversationBusy(max(int(value), 0) / 1000)
        session = await self.open_session(conversation_id)
        await self._bounded(session.clear_session())
        await self._bounded(self._forget(keys=keys, args=[token]))

    async def secret(self) -> bytes:
        key = f"{self.key_prefix}owner-key"
        await self._bounded(self._redis.set(key, secrets.token_bytes(32), nx=True))
        value = await self._bounded(self._redis.get(key))
        if not value:
            raise StoreUnavailable("conversation store: the owner key vanished")
        return bytes(value)

    async def purge_expired(self) -> int:
        return 0  # Redis expires conversations by itself

    async def aclose(self) -> None:
        await self._redis.aclose()
