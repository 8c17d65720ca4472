"""One run's hold on a conversation: the history the Runner reads, and saving what the user saw.

The Runner gets a ``RunSession``: the Agents SDK ``Session`` protocol over the already trimmed
history, which saves nothing. The SDK would save the model's output items, which is not what
the user saw: ``result.cancel()`` drops the current turn, an error drops queued deltas, and its
writes can still be running after the last token. Instead, ``ConversationTurn.events`` follows
the events the stream log receives and, when the run ends in any way, saves the user's message
and the delta texts that were delivered (no text: the message alone) through the store's own
SDK session, then releases the lock. On ``done`` and ``error`` that happens before the terminal
event goes out, so a client that has it can send the next turn at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Final

import anyio
import msgspec
import structlog
from agents.memory import Session, SessionABC

from chat.conversations.locks import LockKeeper
from chat.conversations.store import ConversationStore
from chat.conversations.trimming import HistoryWindow
from chat.conversations.turns import item_bytes, turn_items
from chat.errors import spec_for
from chat.events import ChatEvent, Delta, Done, Error

log = structlog.get_logger(__name__)

SAVE_TIMEOUT_S: Final = 10.0


class RunSession(SessionABC):
    """What the Runner sees of a conversation: its trimmed history, read-only."""

    session_settings = None

    def __init__(self, session_id: str, history: list[Any]) -> None:
        self.session_id = session_id
        self._history = history

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The history chosen for this run (the newest ``limit`` items of it when asked)."""
        if limit is not None and limit >= 0:
            return list(self._history[-limit:]) if limit else []
        return list(self._history)

    async def add_items(self, items: list[Any]) -> None:
        """Nothing: ``ConversationTurn`` saves the turn as delivered when the run ends."""

    async def pop_item(self) -> Any:
        """Nothing to undo: nothing was added."""
        return None

    async def clear_session(self) -> None:
        """Not the Runner's to do."""


class ConversationTurn:
    """A claimed conversation, its history for this run, and the save at the run's end."""

    def __init__(
        self,
        *,
        conversation_id: str,
        owner: str,
        message: str,
        token: str,
        store: ConversationStore,
        session: Session,
        history: HistoryWindow,
        keeper: LockKeeper,
    ) -> None:
        self.conversation_id = conversation_id
        self.owner = owner
        self.message = message
        self.token = token
        self.history = history
        self.run_session = RunSession(conversation_id, history.items)
        self._store = store
        self._session = session
        self._keeper = keeper
        self._ended = False
        self.saved = False

    async def events(self, events: AsyncIterator[ChatEvent]) -> AsyncIterator[ChatEvent]:
        """Pass the run's events on; save the turn before its terminal event, or when cut off."""
        parts: list[str] = []
        try:
            async with aclosing(events):
                async for event in events:
                    if type(event) is Delta:
                        parts.append(event.text)
                        yield event
                        continue
                    yield await self._terminal(event, "".join(parts))  # type: ignore[arg-type]
        finally:
            if not self._ended:
                # The reader of this generator stopped before the end (its task was cancelled,
                # or the stream log failed): what was delivered so far is still saved.
                with anyio.CancelScope(shield=True):
                    await self.finish("".join(parts))

    async def _terminal(self, event: Done | Error, answer: str) -> Done | Error:
        saved = await self.finish(answer)
        if not saved and type(event) is Done:
            spec = spec_for("store_unavailable")
            event = Error(
                code="store_unavailable",
                message=spec.message,
                retryable=spec.retryable,
                request_id=event.request_id,
            )
        return msgspec.structs.replace(event, conversation_id=self.conversation_id)

    async def finish(self, answer: str) -> bool:
        """Save the message and ``answer``, count the turn and release the lock, once."""
        if self._ended:
            return self.saved
        self._ended = True
        self._keeper.drop(self.conversation_id)
        items = turn_items(self.message, answer)
        try:
            async with asyncio.timeout(SAVE_TIMEOUT_S):
                held = await self._store.save(
                    self.conversation_id,
                    self.token,
                    self._session,
                    items,
                    owner=self.owner,
                    turns=1,
                    add_bytes=item_bytes(items),
                )
        except Exception as exc:  # the store's or the SDK session's error: type only, no text
            log.warning(
                "conversation_save_failed",
                conversation_id=self.conversation_id,
                error_type=type(exc).__name__,
            )
            with contextlib.suppress(Exception):
                await self._store.release(self.conversation_id, self.token)
        else:
            self.saved = True
            if not held:
                log.warning("conversation_lock_lost", conversation_id=self.conversation_id)
            log.info(
                "conversation_turn_saved",
                conversation_id=self.conversation_id,
                items=len(items),
                message_chars=len(self.message),
                answer_chars=len(answer),
            )
        finally:
            await self._close_session()
        return self.saved

    async def abandon(self) -> None:
        """Release the conversation without a turn: the run never started."""
        if self._ended:
            return
        self._ended = True
        self._keeper.drop(self.conversation_id)
        try:
            await self._store.release(self.conversation_id, self.token)
        except Exception as exc:  # it expires by itself
            log.warning("conversation_release_failed", error_type=type(exc).__name__)
        finally:
            await self._close_session()

    async def _close_session(self) -> None:
        try:
            await self._store.close_session(self._session)
        except Exception as exc:
            log.warning("conversation_session_close_failed", error_type=type(exc).__name__)
