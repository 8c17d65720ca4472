"""Conversations at the HTTP edge: our errors as contract errors, and a request's turn.

``not_found`` also answers for a conversation of another key, so a caller cannot tell an
existing conversation from an unknown one.
"""

from __future__ import annotations

import re
from typing import Final

from chat.conversations.service import Conversations
from chat.conversations.store import (
    CONVERSATION_ERRORS,
    ConversationBusy,
    ConversationFull,
    ConversationNotFound,
)
from chat.conversations.turn import ConversationTurn
from chat.errors import ChatError

CONVERSATION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
NOT_FOUND_MESSAGE: Final = "Unknown or expired conversation."
# A turn takes seconds; an exact time is unknowable, and clients back off on their own.
BUSY_RETRY_AFTER_S: Final = "1"


def chat_error_for(exc: Exception, path: str = "$.conversation_id") -> ChatError:
    """The contract error for a conversation error."""
    if isinstance(exc, ConversationNotFound):
        return ChatError("not_found", NOT_FOUND_MESSAGE)
    if isinstance(exc, ConversationBusy):
        return ChatError("conversation_busy", headers={"Retry-After": BUSY_RETRY_AFTER_S})
    if isinstance(exc, ConversationFull):
        return ChatError(
            "invalid_request",
            f"The conversation reached its limit of {exc.limit} {exc.what}.",
            details=[
                {
                    "path": path,
                    "message": (
                        f"the conversation holds at most {exc.limit} {exc.what}; "
                        "start a new conversation"
                    ),
                }
            ],
        )
    return ChatError("store_unavailable", headers={"Retry-After": "1"})


def is_conversation_id(value: str) -> bool:
    """Whether ``value`` is a well-formed conversation id."""
    return CONVERSATION_ID.fullmatch(value) is not None


async def begin_turn(
    conversations: Conversations | None,
    conversation_id: str | None,
    *,
    authorization: str | None,
    message: str,
) -> ConversationTurn | None:
    """The turn of a request that names a conversation (None otherwise), or a ChatError."""
    if conversation_id is None:
        return None
    if conversations is None:  # the lifespan has not opened the store (an app without one)
        raise ChatError("store_unavailable", headers={"Retry-After": "1"})
    owner = conversations.owner_for(authorization)
    try:
        return await conversations.begin(conversation_id, owner, message)
    except CONVERSATION_ERRORS as exc:
        raise chat_error_for(exc) from None
