"""HTTP in and out: check and decode the request, pick JSON or SSE, map errors to statuses."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Final

import anyio
import msgspec
import structlog
from agents import Agent
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chat.bodies import ChatReply, ErrorBody, ErrorDetail, ErrorInfo, Health, Ready, StreamCreated
from chat.conversations.edge import begin_turn
from chat.errors import ChatError, spec_for
from chat.events import ChatEvent, Delta, Done, Error, encode_retry
from chat.metrics import Metrics
from chat.models.errors import InputTooLongError
from chat.openapi import document_bytes
from chat.requests import decode_chat_request
from chat.run.consumer import stream_chat
from chat.run.control import RunControl, RunStats
from chat.state import AppState
from chat.streams.manager import StreamRun
from chat.streams.store import StoreUnavailable
from logging_config.dropped_readers import mark_reader_dropped

log = structlog.get_logger(__name__)

_json: Final = msgspec.json.Encoder()
_JSON_TYPE: Final = "application/json"
_RETRY_SOON: Final = {"Retry-After": "1"}
# Seconds a client is asked to wait while the stream store is away (the health probe's period).
_STORE_RETRY_AFTER: Final = "1"


# --- errors -----------------------------------------------------------------------------------


def error_body(
    code: str, request_id: str, message: str | None = None, details: Any = None
) -> bytes:
    """The contract's error JSON: ``{"error": {"code", "message", "request_id"[, "details"]}}``."""
    info = ErrorInfo(
        code=code,
        message=message or spec_for(code).message,
        request_id=request_id,
        details=[_detail(d) for d in details] if details else msgspec.UNSET,
    )
    return _json.encode(ErrorBody(info))


def _detail(detail: ErrorDetail | dict[str, str]) -> ErrorDetail:
    return detail if isinstance(detail, ErrorDetail) else ErrorDetail(**detail)


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


def store_unavailable_response(request_id: str) -> Response:
    """503 ``store_unavailable``: Redis cannot be reached; it heals by itself."""
    return error_response(
        "store_unavailable", request_id, headers={"Retry-After": _STORE_RETRY_AFTER}
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


def refuse_declared_oversize(request: Request, limit: int) -> None:
    """413 at once when Content-Length already says the body is over ``limit``."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise ChatError("payload_too_large", headers={"Connection": "close"})


async def read_body_limited(request: Request, limit: int) -> bytes:
    """Read the body but stop at ``limit`` bytes: a chunked or lying upload is cut off there."""
    refuse_declared_oversize(request, limit)
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
    return Response(_HEALTHY, media_type=_JSON_TYPE)


_HEALTHY: Final = _json.encode(Health())


async def readyz(request: Request) -> Response:
    """Readiness: the model backend is loaded and the process is not draining."""
    state: AppState = request.state.chat
    if state.drainer.draining:
        return error_response("shutting_down", request_id_of(request))
    if not state.backend.ready:
        return error_response("not_ready", request_id_of(request))
    if not state.streams.store.available:
        return store_unavailable_response(request_id_of(request))
    body = Ready(backend=state.backend.name, open_streams=state.slots.in_use)
    return Response(_json.encode(body), media_type=_JSON_TYPE)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format, summed over all workers in multiprocess mode."""
    state: AppState = request.state.chat
    request_id = request_id_of(request)
    recorder = state.metrics
    if not isinstance(recorder, Metrics):
        return error_response("not_found", request_id, message="Metrics are off.")
    settings = state.settings
    if not settings.metrics_public and not is_authorized(
        request.headers.get("authorization"), settings.api_keys
    ):
        return error_response("unauthorized", request_id, headers={"WWW-Authenticate": "Bearer"})
    # A thread: in multiprocess mode the scrape reads every worker's files.
    body, content_type = await anyio.to_thread.run_sync(
        recorder.render, request.headers.get("accept")
    )
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the OpenAPI 3.1 document of every route."""
    return Response(document_bytes(), media_type=_JSON_TYPE)


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
        request.state.chat.metrics.rejected(exc.code)
        return error_response(
            exc.code, request_id, message=exc.message, details=exc.details, headers=exc.headers
        )
    except StoreUnavailable:
        access_record(request)["outcome"] = "store_unavailable"
        return store_unavailable_response(request_id)
    except ClientDisconnect:
        access_record(request)["outcome"] = "client_disconnected"
        return Response(status_code=400)


class Reply:
    """What a JSON-mode reader needs from the run: the text and the terminal event."""

    __slots__ = ("parts", "terminal")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.terminal: Done | Error | None = None


async def _start_run(
    request: Request, request_id: str, *, reply: Reply | None = None
) -> tuple[StreamRun, dict[str, str]]:
    """Check, decode and admit the request, then start its run into the stream store."""
    state: AppState = request.state.chat
    settings = state.settings
    if not is_authorized(request.headers.get("authorization"), settings.api_keys):
        raise ChatError("unauthorized", headers={"WWW-Authenticate": "Bearer"})
    if not is_json_content_type(request.headers.get("content-type")):
        raise ChatError("unsupported_media_type")
    refuse_declared_oversize(request, settings.max_body_bytes)
    if state.slots.full and not state.drainer.draining:
        # Shed before reading or decoding the body, so a refusal costs next to nothing while
        # the loop is behind; the header checks above still win (401, 415, 413). A draining
        # server says shutting_down, below, as before.
        raise ChatError("overloaded", headers=_RETRY_SOON)
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
    if not state.streams.store.available:
        raise StoreUnavailable("known to be away")
    try:
        await state.backend.check_input(settings.instructions, chat_request.message)
    except InputTooLongError as exc:
        raise ChatError(
            "invalid_request", details=[{"path": exc.path, "message": exc.message}]
        ) from None
    if not state.slots.try_acquire():  # the check above, again: the body read let others in
        raise ChatError("overloaded", headers=_RETRY_SOON)
    try:
        turn = await begin_turn(
            state.conversations,
            chat_request.conversation_id,
            authorization=request.headers.get("authorization"),
            message=chat_request.message,
        )
    except BaseException:
        state.slots.release()
        raise
    state.metrics.run_started()

    stats = RunStats()
    control = RunControl()
    agent = state.agents.acquire()
    events = stream_chat(
        agent=agent,
        model=state.backend.model,
        message=chat_request.message,
        request_id=request_id,
        deadlines=state.deadlines,
        model_settings=state.model_settings_for(request_id),
        tracing=settings.tracing,
        stats=stats,
        control=control,
        session=turn.run_session if turn is not None else None,
    )
    headers: dict[str, str] = {}
    if turn is not None:
        events = turn.events(events)
        headers["X-Conversation-ID"] = turn.conversation_id
        access["conversation_id"] = turn.conversation_id
        access["history_turns"] = turn.history.turns_sent
    held = _holding_slot(
        events, state, control, agent, reply, access, keep_text=settings.log_content
    )
    try:
        run = await state.streams.start(held, control=control, stats=stats)
    except BaseException:
        state.agents.release(agent)
        state.slots.release()
        state.metrics.run_released()
        if turn is not None:
            await turn.abandon()
        raise
    access["stream_id"] = run.stream_id
    return run, headers


async def _chat(request: Request, request_id: str) -> Response:
    state: AppState = request.state.chat
    json_mode = wants_json(request.headers.get("accept"))
    reply = Reply() if json_mode else None
    run, headers = await _start_run(request, request_id, reply=reply)
    headers["X-Stream-ID"] = run.stream_id
    frames = state.streams.follow(run.stream_id, 0, request_id=request_id)
    access = access_record(request)
    if reply is not None:
        if not await _read_unless_disconnected(frames, request.receive):
            # Nobody can resume it (the stream id was never sent): stop paying for it now.
            state.streams.cancel(run.stream_id, detached=True)
            _record_run(access, run.stats, delivered=False)
            return Response(status_code=400)  # never seen: the client is gone
        _record_run(access, run.stats, delivered=True)
        if reply.terminal is None and run.store_lost:
            access["outcome"] = "store_unavailable"
            return error_response(
                "store_unavailable",
                request_id,
                headers={**headers, "Retry-After": _STORE_RETRY_AFTER},
            )
        return _json_reply(reply, request_id, headers, retry_after=run.stats.retry_after)
    return _event_stream(_reporting(frames, run.stats, access), state, headers, access)


async def _read_unless_disconnected(frames: AsyncIterator[bytes], receive: Receive) -> bool:
    """Read ``frames`` to their end; False, reading stopped, when the client disconnects first.

    A JSON reply is only written at the end, so without watching ``receive`` a client that
    hangs up would leave its run (and the provider's bill) going until the answer is complete.
    """

    async def read_all() -> None:
        async with aclosing(frames):
            async for _ in frames:
                pass

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # the body was read already: only the disconnect can come

    reading = asyncio.ensure_future(read_all())
    watching = asyncio.ensure_future(until_disconnect())
    try:
        await asyncio.wait((reading, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watching, reading):
            if not task.done():
                task.cancel()
        await asyncio.gather(watching, reading, return_exceptions=True)
    if reading.cancelled() or not reading.done():
        return False
    reading.result()  # a failure of the read itself propagates
    return True


async def _create_stream(request: Request, request_id: str) -> Response:
    run, headers = await _start_run(request, request_id)
    events_url = f"/chat/streams/{run.stream_id}"
    access_record(request)["outcome"] = "created"
    body = StreamCreated(stream_id=run.stream_id, events_url=events_url, request_id=request_id)
    return Response(
        _json.encode(body),
        status_code=201,
        media_type=_JSON_TYPE,
        headers={"Location": events_url, "X-Stream-ID": run.stream_id, **headers},
    )


async def stream_resource(request: Request) -> Response:
    """``/chat/streams/{id}``: GET reads it, DELETE cancels it."""
    try:
        if request.method == "DELETE":
            return await cancel_stream(request)
        return await read_stream(request)
    except StoreUnavailable:
        access_record(request)["outcome"] = "store_unavailable"
        return store_unavailable_response(request_id_of(request))


async def read_stream(request: Request) -> Response:
    """``GET /chat/streams/{id}``: the stream from its start or after ``Last-Event-ID``."""
    state: AppState = request.state.chat
    request_id = request_id_of(request)
    stream_id = request.path_params["stream_id"]
    access = access_record(request)
    access["stream_id"] = stream_id
    raw_query = request.query_params.get("lastEventId")
    after = parse_last_event_id(request.headers.get("last-event-id") or raw_query)
    # The header wins, but a malformed query value is still a bad request, not ignored.
    if after is None or (raw_query is not None and parse_last_event_id(raw_query) is None):
        access["outcome"] = "invalid_request"
        return error_response(
            "invalid_request",
            request_id,
            message="Last-Event-ID must be an event id of this stream.",
            details=[{"path": "Last-Event-ID", "message": "expected a non-negative integer"}],
            status=400,
        )
    if not state.streams.store.available:
        raise StoreUnavailable("known to be away")
    info = await state.streams.store.info(stream_id)
    if info is None:
        access["outcome"] = "not_found"
        return error_response("not_found", request_id, message="Unknown or expired stream.")
    access["resumed_after"] = after
    if info.finished and after >= info.last_id:
        # The client has every event: 204 is what stops EventSource from reconnecting.
        access["outcome"] = "complete"
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    frames = state.streams.follow(stream_id, after, request_id=request_id)
    return _event_stream(
        _reading(frames, access), state, {}, access, retry_ms=state.settings.sse_retry_ms
    )


async def cancel_stream(request: Request) -> Response:
    """``DELETE /chat/streams/{id}``: cancel the run; readers get an ``error`` ``cancelled``."""
    state: AppState = request.state.chat
    request_id = request_id_of(request)
    if not is_authorized(request.headers.get("authorization"), state.settings.api_keys):
        return error_response("unauthorized", request_id, headers={"WWW-Authenticate": "Bearer"})
    stream_id = request.path_params["stream_id"]
    info = await state.streams.store.info(stream_id)
    if info is None:
        return error_response("not_found", request_id, message="Unknown or expired stream.")
    if not info.finished and not state.streams.cancel(stream_id):
        await state.streams.store.request_cancel(stream_id)  # it runs on another worker
    access_record(request)["outcome"] = "cancelled" if not info.finished else "complete"
    return Response(status_code=204)


def parse_last_event_id(raw: str | None) -> int | None:
    """``None`` or empty means from the start (0); anything but a small non-negative int is bad."""
    if raw is None or raw.strip() == "":
        return 0
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        return None
    return int(raw)


class _EventSourceResponse(EventSourceResponse):
    """sse-starlette's response, plus what happens when a reader stops reading.

    With ``send_timeout`` set (``CHAT_SEND_TIMEOUT_S``), a send still blocked after that long
    (the reader's socket is full) makes sse-starlette close the body, so the reader detaches
    (the run follows the detached-grace rule), and raise ``SendTimeoutError``. That is the
    reader's doing, not a server error: it is logged as ``stream_send_timeout`` and the app
    returns, so uvicorn closes the connection (the body cannot be finished on a full socket).

    With no send timeout, ``_send_with_timeout`` would still wrap each event in
    ``anyio.move_on_after(None)``: ~4 us of CPU per event here, for a scope that never fires,
    so that case sends directly. With a send timeout the library's own path runs.
    """

    def __init__(self, *args: Any, access: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._access = access

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._access["outcome"] = "send_timeout"
            mark_reader_dropped()
            log.info(
                "stream_send_timeout",
                stream_id=self._access.get("stream_id"),
                send_timeout_s=self.send_timeout,
            )


def _event_stream(
    body: AsyncIterator[bytes],
    state: AppState,
    headers: dict[str, str],
    access: dict[str, Any],
    *,
    retry_ms: int | None = None,
) -> EventSourceResponse:
    settings = state.settings
    response = _EventSourceResponse(
        _with_retry(body, retry_ms) if retry_ms is not None else body,
        access=access,
        ping=settings.ping_interval_s,
        sep="\n",
        ping_message_factory=_ping,
        headers={"Cache-Control": "no-store", **headers},
        # A reader that reads nothing this long is let go (0: never).
        send_timeout=settings.send_timeout_s or None,
        # sse-starlette cancels streams on shutdown unless told to wait; our drainer ends them
        # first with a farewell event, so give it the grace period plus time to send it. The
        # event is only a flag the library sets (our drainer acts on its own): one for all.
        shutdown_event=state.sse_shutdown,
        shutdown_grace_period=settings.shutdown_grace_s + 2.0,
    )
    # Connection is hop-by-hop and forbidden in HTTP/2; HTTP/1.1 keeps alive by default.
    del response.headers["connection"]
    return response


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


async def _with_retry(body: AsyncIterator[bytes], retry_ms: int) -> AsyncIterator[bytes]:
    yield encode_retry(retry_ms)
    async with aclosing(body):
        async for chunk in body:
            yield chunk


async def _holding_slot(
    events: AsyncIterator[ChatEvent],
    state: AppState,
    control: RunControl,
    agent: Agent[Any],
    reply: Reply | None,
    access: dict[str, Any],
    *,
    keep_text: bool = False,
) -> AsyncIterator[ChatEvent]:
    """Hold the stream slot, the run's agent and the drainer registration while the run lasts."""
    state.drainer.register(control.stop)
    answer: list[str] | None = reply.parts if reply is not None else ([] if keep_text else None)
    try:
        async with aclosing(events):
            async for event in events:
                if type(event) is Delta:
                    if answer is not None:
                        answer.append(event.text)
                elif reply is not None:
                    reply.terminal = event  # type: ignore[assignment]
                yield event
    finally:
        if keep_text and answer is not None:
            access["answer_text"] = "".join(answer)
        state.drainer.unregister(control.stop)
        # stream_chat has closed the run. A cancelled SDK task may still be unwinding: sharing an
        # agent for that moment is allowed, only slower.
        state.agents.release(agent)
        state.slots.release()
        state.metrics.run_released()


async def _reporting(
    frames: AsyncIterator[bytes], stats: RunStats, access: dict[str, Any]
) -> AsyncIterator[bytes]:
    """Pass frames through; when the reader ends, put the run's figures in the access line."""
    delivered = False
    try:
        async with aclosing(frames):
            async for chunk in frames:
                yield chunk
        delivered = True
    finally:
        _record_run(access, stats, delivered=delivered)


async def _reading(frames: AsyncIterator[bytes], access: dict[str, Any]) -> AsyncIterator[bytes]:
    """A resumed reader's access line: how many bytes it got and how it ended."""
    sent = 0
    last = b""
    try:
        async with aclosing(frames):
            async for chunk in frames:
                sent += len(chunk)
                last = chunk
                yield chunk
        access["outcome"] = terminal_outcome(last)
    finally:
        access.setdefault("outcome", "client_disconnected")
        access["bytes_sent"] = sent


def terminal_outcome(chunk: bytes) -> str:
    """``done`` or the error code of the terminal frame at the end of ``chunk``."""
    start = chunk.rfind(b"event: ")
    if start < 0:
        return "incomplete"
    if chunk.startswith(b"event: done", start):
        return "done"
    data = chunk.rfind(b"data: ")
    try:
        return str(msgspec.json.decode(chunk[data + 6 :].strip()).get("code", "error"))
    except (msgspec.DecodeError, AttributeError):
        return "error"


def _record_run(access: dict[str, Any], stats: RunStats, *, delivered: bool) -> None:
    access["ttft_ms"] = stats.ttft_ms()
    access["deltas"] = stats.deltas
    access["output_chars"] = stats.output_chars
    access["outcome"] = (stats.outcome or "incomplete") if delivered else "client_disconnected"
    if stats.finish_reason:
        access["finish_reason"] = stats.finish_reason
    if stats.usage is not None:
        access["input_tokens"] = stats.usage.input_tokens
        access["output_tokens"] = stats.usage.output_tokens
    if stats.upstream_request_id:
        access["upstream_request_id"] = stats.upstream_request_id
    access["stream_ms"] = round((time.perf_counter() - stats.started_at) * 1000, 2)


def _json_reply(
    reply: Reply, request_id: str, headers: dict[str, str], *, retry_after: str | None = None
) -> Response:
    """The whole answer as JSON; a stream error becomes the matching error status.

    A retryable failure carries ``Retry-After``: the provider's own when it sent one (a 429),
    else 1 s.
    """
    terminal = reply.terminal
    if type(terminal) is Done:
        body = ChatReply(
            text="".join(reply.parts),
            finish_reason=terminal.finish_reason,
            usage=terminal.usage,
            request_id=request_id,
            conversation_id=terminal.conversation_id,
        )
        return Response(_json.encode(body), media_type=_JSON_TYPE, headers=headers)
    code = terminal.code if type(terminal) is Error else "internal_error"
    retryable = terminal.retryable if type(terminal) is Error else spec_for(code).retryable
    if retryable:
        headers = {**headers, "Retry-After": retry_after or "1"}
    return error_response(code, request_id, headers=headers)
