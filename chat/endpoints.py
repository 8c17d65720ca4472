"""HTTP in and out: check and decode the request, pick JSON or SSE, map errors to statuses."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Final

import msgspec
import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from chat.errors import ChatError, spec_for
from chat.events import ChatEvent, Delta, Done, Error, encode_sse
from chat.requests import decode_chat_request
from chat.runner import RunControl, RunStats, stream_chat
from chat.state import AppState

log = structlog.get_logger(__name__)

_json: Final = msgspec.json.Encoder()
_JSON_TYPE: Final = "application/json"


# --- errors -----------------------------------------------------------------------------------


def error_body(
    code: str, request_id: str, message: str | None = None, details: Any = None
) -> bytes:
    """The contract's error JSON: ``{"error": {"code", "message", "request_id"[, "details"]}}``."""
    error: dict[str, Any] = {
        "code": code,
        "message": message or spec_for(code).message,
        "request_id": request_id,
    }
    if details:
        error["details"] = details
    return _json.encode({"error": error})


def error_response(
    code: str,
    request_id: str,
    *,
    message: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
    status: int | None = None,
) -> Response:
    """A JSON error response for a contract code."""
    return Response(
        error_body(code, request_id, message, details),
        status_code=status or spec_for(code).status,
        media_type=_JSON_TYPE,
        headers=headers,
    )


def request_id_of(request: Request) -> str:
    """The correlation id the middleware gave this request."""
    state = request.scope.get("state") or {}
    return str(state.get("request_id") or "-")


def access_record(request: Request) -> dict[str, Any]:
    """The per-request dict the access log middleware writes out when the request ends."""
    state = request.scope.get("state")
    if isinstance(state, dict):
        record = state.get("access")
        if isinstance(record, dict):
            return record
    return {}


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 (and other HTTPExceptions) as contract JSON."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return error_response(
        code, request_id_of(request), headers=dict(exc.headers or {}), status=exc.status_code
    )


# --- request checks (pure where possible) -----------------------------------------------------


def wants_json(accept: str | None) -> bool:
    """JSON only when the client asks for JSON and not for an event stream."""
    if not accept:
        return False
    accept = accept.lower()
    return "application/json" in accept and "text/event-stream" not in accept


def is_json_content_type(content_type: str | None) -> bool:
    """``application/json``, with or without parameters such as charset."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == _JSON_TYPE


def is_authorized(authorization: str | None, api_keys: tuple[str, ...]) -> bool:
    """No keys configured means no auth; otherwise a matching bearer token (constant time)."""
    if not api_keys:
        return True
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    presented = token.strip().encode()
    # Compare against every key so timing does not reveal which one matched.
    matched = False
    for key in api_keys:
        matched |= hmac.compare_digest(presented, key.encode())
    return matched


def declared_length(request: Request) -> int | None:
    """The Content-Length header as an int, or None when absent or malformed."""
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


async def read_body_limited(request: Request, limit: int) -> bytes:
    """Read the body but stop at ``limit`` bytes: a chunked or lying upload is cut off there."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise ChatError("payload_too_large", headers={"Connection": "close"})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ChatError("payload_too_large", headers={"Connection": "close"})
        chunks.append(chunk)
    return b"".join(chunks)


# --- routes -----------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness: the process serves."""
    return Response(b'{"status":"ok"}', media_type=_JSON_TYPE)


async def readyz(request: Request) -> Response:
    """Readiness: the model backend is loaded and the process is not draining."""
    state: AppState = request.state.chat
    if state.drainer.draining:
        return error_response("shutting_down", request_id_of(request))
    if not state.backend.ready:
        return error_response("not_ready", request_id_of(request))
    body = {"status": "ready", "backend": state.backend.name, "open_streams": state.slots.in_use}
    return Response(_json.encode(body), media_type=_JSON_TYPE)


async def chat(request: Request) -> Response:
    """``POST /chat``: one message in, the answer out as SSE (or one JSON reply)."""
    request_id = request_id_of(request)
    try:
        return await _chat(request, request_id)
    except ChatError as exc:
        access_record(request)["outcome"] = exc.code
        return error_response(
            exc.code, request_id, message=exc.message, details=exc.details, headers=exc.headers
        )
    except ClientDisconnect:
        access_record(request)["outcome"] = "client_disconnected"
        return Response(status_code=400)


async def _chat(request: Request, request_id: str) -> Response:
    state: AppState = request.state.chat
    settings = state.settings
    if not is_authorized(request.headers.get("authorization"), settings.api_keys):
        raise ChatError("unauthorized", headers={"WWW-Authenticate": "Bearer"})
    if not is_json_content_type(request.headers.get("content-type")):
        raise ChatError("unsupported_media_type")
    body = await read_body_limited(request, settings.max_body_bytes)
    chat_request = decode_chat_request(body, max_message_chars=settings.max_message_chars)
    access = access_record(request)
    access["input_chars"] = len(chat_request.message)
    if settings.log_content:
        access["message_text"] = chat_request.message
    access["backend"] = state.backend.name
    if state.drainer.draining:
        raise ChatError("shutting_down", headers={"Retry-After": "5"})
    if not state.backend.ready:
        raise ChatError("not_ready", headers={"Retry-After": "5"})
    await state.backend.check_input(settings.instructions, chat_request.message)
    if not state.slots.try_acquire():
        raise ChatError("overloaded", headers={"Retry-After": "1"})

    stats = RunStats()
    control = RunControl()
    events = stream_chat(
        agent=state.agent,
        model=state.backend.model,
        message=chat_request.message,
        request_id=request_id,
        deadlines=state.deadlines,
        model_settings=state.model_settings_for(request_id),
        tracing=settings.tracing,
        stats=stats,
        control=control,
    )
    tracked = _tracked(events, state, control, stats, access, keep_text=settings.log_content)
    if wants_json(request.headers.get("accept")):
        return await _json_reply(tracked, request_id)
    response = EventSourceResponse(
        _sse_frames(tracked),
        ping=settings.ping_interval_s,
        sep="\n",
        ping_message_factory=_ping,
        headers={"Cache-Control": "no-store"},
        # sse-starlette cancels streams on shutdown unless told to wait; our drainer ends them
        # first with a farewell event, so give it the grace period plus time to send it.
        shutdown_event=_unused_event(),
        shutdown_grace_period=settings.shutdown_grace_s + 2.0,
    )
    # Connection is hop-by-hop and forbidden in HTTP/2; HTTP/1.1 keeps alive by default.
    del response.headers["connection"]
    return response


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


def _unused_event() -> Any:
    import anyio

    return anyio.Event()


async def _tracked(
    events: AsyncIterator[ChatEvent],
    state: AppState,
    control: RunControl,
    stats: RunStats,
    access: dict[str, Any],
    *,
    keep_text: bool = False,
) -> AsyncIterator[ChatEvent]:
    """Hold the stream slot and drainer registration for the life of the run; fill the log."""
    state.drainer.register(control.stop)
    answer: list[str] | None = [] if keep_text else None
    try:
        async with aclosing(events):
            async for event in events:
                if answer is not None and type(event) is Delta:
                    answer.append(event.text)
                yield event
    finally:
        if answer is not None:
            access["answer_text"] = "".join(answer)
        state.drainer.unregister(control.stop)
        state.slots.release()
        access["ttft_ms"] = stats.ttft_ms()
        access["deltas"] = stats.deltas
        access["output_chars"] = stats.output_chars
        access["outcome"] = stats.outcome or "client_disconnected"
        if stats.finish_reason:
            access["finish_reason"] = stats.finish_reason
        if stats.usage is not None:
            access["input_tokens"] = stats.usage.input_tokens
            access["output_tokens"] = stats.usage.output_tokens
        if stats.upstream_request_id:
            access["upstream_request_id"] = stats.upstream_request_id
        access["stream_ms"] = round((time.perf_counter() - stats.started_at) * 1000, 2)


async def _sse_frames(events: AsyncIterator[ChatEvent]) -> AsyncIterator[bytes]:
    """Number the events 1, 2, 3 … and encode each once."""
    event_id = 0
    async with aclosing(events):
        async for event in events:
            event_id += 1
            yield encode_sse(event, event_id)


async def _json_reply(events: AsyncIterator[ChatEvent], request_id: str) -> Response:
    """Collect the whole answer; a stream error becomes the matching error status."""
    parts: list[str] = []
    terminal: Done | Error | None = None
    async with aclosing(events):
        async for event in events:
            if type(event) is Delta:
                parts.append(event.text)
            else:
                terminal = event  # type: ignore[assignment]
    if type(terminal) is Done:
        body = {
            "text": "".join(parts),
            "finish_reason": terminal.finish_reason,
            "usage": terminal.usage,
            "request_id": request_id,
        }
        return Response(_json.encode(body), media_type=_JSON_TYPE)
    code = terminal.code if terminal is not None else "internal_error"
    headers = {"Retry-After": "1"} if spec_for(code).retryable else None
    return error_response(code, request_id, headers=headers)
