"""``POST /chat`` and ``POST /chat/streams``: decode, hand the run to the service, encode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from chat.bodies import StreamCreated
from chat.errors import ChatError
from chat.http.access import record_run, reporting
from chat.http.checks import (
    JSON_TYPE,
    is_authorized,
    is_json_content_type,
    read_body_limited,
    refuse_declared_oversize,
    wants_json,
)
from chat.http.json_reply import json_reply, read_unless_disconnected
from chat.http.replies import (
    BEARER_CHALLENGE,
    chat_error_response,
    store_unavailable_response,
)
from chat.http.scope import access_record, app_state, request_id_of
from chat.http.sse import event_stream
from chat.requests import decode_chat_request
from chat.service.record import ChatRun
from chat.streams.store import StoreUnavailable

_json: Final = msgspec.json.Encoder()


async def chat(request: Request) -> Response:
    """``POST /chat``: one message in, the answer out as SSE (or one JSON reply)."""
    return await _guarded(request, _chat)


async def create_stream(request: Request) -> Response:
    """``POST /chat/streams``: start the run; readers follow it at ``events_url``."""
    return await _guarded(request, _create_stream)


async def _guarded(
    request: Request, handler: Callable[[Request, str], Awaitable[Response]]
) -> Response:
    request_id = request_id_of(request)
    try:
        return await handler(request, request_id)
    except ChatError as exc:
        access_record(request)["outcome"] = exc.code
        app_state(request).metrics.rejected(exc.code)
        return chat_error_response(exc, request_id)
    except StoreUnavailable:
        access_record(request)["outcome"] = "store_unavailable"
        return store_unavailable_response(request_id)
    except ClientDisconnect:
        access_record(request)["outcome"] = "client_disconnected"
        return Response(status_code=400)


async def _start_run(request: Request, request_id: str, *, keep_text: bool) -> ChatRun:
    """Check the headers, shed when full, read and decode the body, and start the run."""
    state = app_state(request)
    settings = state.settings
    service = state.service
    authorization = request.headers.get("authorization")
    if not is_authorized(authorization, settings.api_keys):
        raise ChatError("unauthorized", headers=BEARER_CHALLENGE)
    if not is_json_content_type(request.headers.get("content-type")):
        raise ChatError("unsupported_media_type")
    refuse_declared_oversize(request, settings.max_body_bytes)
    # Shed before reading or decoding the body, so a refusal costs next to nothing while the
    # loop is behind; the header checks above still win (401, 415, 413).
    service.refuse_when_full()
    body = await read_body_limited(request, settings.max_body_bytes)
    chat_request = decode_chat_request(body, max_message_chars=settings.max_message_chars)
    access = access_record(request)
    access["input_chars"] = len(chat_request.message)
    if settings.log_content:
        access["message_text"] = chat_request.message
    access["backend"] = state.backend.name
    run = await service.start(
        chat_request, request_id=request_id, authorization=authorization, keep_text=keep_text
    )
    if run.conversation_id is not None:
        access["conversation_id"] = run.conversation_id
        access["history_turns"] = run.history_turns
    access["stream_id"] = run.stream_id
    return run


def _run_headers(run: ChatRun) -> dict[str, str]:
    headers = {"X-Stream-ID": run.stream_id}
    if run.conversation_id is not None:
        headers["X-Conversation-ID"] = run.conversation_id
    return headers


async def _chat(request: Request, request_id: str) -> Response:
    state = app_state(request)
    log_content = state.settings.log_content
    json_mode = wants_json(request.headers.get("accept"))
    run = await _start_run(request, request_id, keep_text=json_mode or log_content)
    headers = _run_headers(run)
    frames = state.service.streams.follow(run.stream_id, 0, request_id=request_id)
    access = access_record(request)
    if not json_mode:
        body = reporting(frames, run, access, keep_text=log_content)
        return event_stream(body, state, headers, access)
    if not await read_unless_disconnected(frames, request.receive):
        # Nobody can resume it (the stream id was never sent): stop paying for it now.
        state.service.streams.cancel(run.stream_id, detached=True)
        record_run(access, run, delivered=False, keep_text=log_content)
        return Response(status_code=400)  # never seen: the client is gone
    record_run(access, run, delivered=True, keep_text=log_content)
    if run.terminal is None and run.store_lost:
        access["outcome"] = "store_unavailable"
        return store_unavailable_response(request_id, headers)
    return json_reply(run, request_id, headers)


async def _create_stream(request: Request, request_id: str) -> Response:
    run = await _start_run(request, request_id, keep_text=False)
    events_url = f"/chat/streams/{run.stream_id}"
    access_record(request)["outcome"] = "created"
    body = StreamCreated(stream_id=run.stream_id, events_url=events_url, request_id=request_id)
    return Response(
        _json.encode(body),
        status_code=201,
        media_type=JSON_TYPE,
        headers={"Location": events_url, **_run_headers(run)},
    )
