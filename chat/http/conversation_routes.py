"""``GET`` and ``DELETE /conversations/{id}``: the history as text, and removing it.

Same rules as the stream routes: with ``CHAT_API_KEYS`` a key is needed (401), and a
conversation of another key is ``404`` like an unknown one, and so is a malformed id.
"""

from __future__ import annotations

from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from chat.conversations.edge import chat_error_for, is_conversation_id
from chat.conversations.service import Conversations
from chat.conversations.store import CONVERSATION_ERRORS
from chat.errors import ChatError
from chat.http.checks import is_authorized
from chat.http.replies import chat_error_response, error_response, unauthorized_response
from chat.http.scope import access_record, app_state, request_id_of

_json: Final = msgspec.json.Encoder()


async def conversation_resource(request: Request) -> Response:
    """``/conversations/{conversation_id}``: GET reads it, DELETE removes it."""
    state = app_state(request)
    request_id = request_id_of(request)
    access = access_record(request)
    conversation_id = request.path_params["conversation_id"]
    if not is_authorized(request.headers.get("authorization"), state.settings.api_keys):
        access["outcome"] = "unauthorized"
        return unauthorized_response(request_id)
    if not is_conversation_id(conversation_id):
        # No conversation can have that id: unknown, like any other (the body's 422 is for ids
        # a client sends to start one).
        access["outcome"] = "not_found"
        return error_response("not_found", request_id)
    access["conversation_id"] = conversation_id
    conversations: Conversations | None = state.service.conversations
    assert conversations is not None, "the lifespan opens the conversation store"
    owner = conversations.owner_for(request.headers.get("authorization"))
    try:
        if request.method == "DELETE":
            await conversations.delete(conversation_id, owner)
            access["outcome"] = "deleted"
            return Response(status_code=204)
        turns = await conversations.read(conversation_id, owner)
    except CONVERSATION_ERRORS as exc:
        error: ChatError = chat_error_for(exc, path="conversation_id")
        access["outcome"] = error.code
        return chat_error_response(error, request_id)
    access["outcome"] = "ok"
    access["turns"] = len(turns)
    body = {"conversation_id": conversation_id, "turns": turns, "request_id": request_id}
    return Response(
        _json.encode(body),
        media_type="application/json",
        headers={"Cache-Control": "no-store", "X-Conversation-ID": conversation_id},
    )
