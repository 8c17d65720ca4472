"""The conversation locks this process holds, renewed together while their runs last.

One renewal pass for all held locks (one transaction or one pipeline) instead of a timer task
per run. A lock lives ``lock_ttl_s`` and is renewed every third of that, so a worker that stops
renewing (it died, or its loop is stuck) frees its conversations within one lifetime.
"""

from __future__ import annotations

import structlog

from chat.conversations.store import ConversationStore, StoreUnavailable

log = structlog.get_logger(__name__)


class LockKeeper:
    """Held locks by conversation id, and one renewal pass over them."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, str] = {}

    def hold(self, conversation_id: str, token: str) -> None:
        """Keep renewing this lock until ``drop``."""
        self._held[conversation_id] = token

    def drop(self, conversation_id: str) -> None:
        """Stop renewing (the run ended; its lock is released or left to expire)."""
        self._held.pop(conversation_id, None)

    @property
    def held(self) -> int:
        """Locks held now."""
        return len(self._held)

    async def renew(self, store: ConversationStore) -> None:
        """Extend every held lock once; a lock found lost is logged and no longer renewed."""
        locks = list(self._held.items())
        if not locks:
            return
        try:
            lost = await store.renew(locks)
        except StoreUnavailable as exc:
            log.warning("conversation_lock_renew_failed", locks=len(locks), error=str(exc))
            return
        for conversation_id in lost:
            log.warning("conversation_lock_lost", conversation_id=conversation_id)
            if self._held.get(conversation_id) == dict(locks).get(conversation_id):
                self.drop(conversation_id)
