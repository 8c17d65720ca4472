"""``GET`` and ``DELETE /chat/streams/{id}``: read a stream (resuming), or cancel its run."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chat.http.access import reading
from chat.http.checks import is_authorized, parse_last_event_id
from chat.http.replies import error_response, store_unavailable_response, unauthorized_response
from chat.http.scope import access_record, app_state, request_id_of
from chat.http.sse import event_stream
from chat.streams.manager import Reading
from chat.streams.store import StoreUnavailable

UNKNOWN_STREAM = "Unknown or expired stream."


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
    state = app_state(request)
    streams = state.service.streams
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
    if not streams.store.available:
        raise StoreUnavailable("known to be away")
    info = await streams.store.info(stream_id)
    if info is None:
        access["outcome"] = "not_found"
        return error_response("not_found", request_id, message=UNKNOWN_STREAM)
    access["resumed_after"] = after
    if info.finished and after >= info.last_id:
        # The client has every event: 204 is what stops EventSource from reconnecting.
        access["outcome"] = "complete"
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    seen = Reading()
    frames = streams.follow(stream_id, after, request_id=request_id, reading=seen)
    return event_stream(
        reading(frames, seen, access), state, {}, access, retry_ms=state.settings.sse_retry_ms
    )


async def cancel_stream(request: Request) -> Response:
    """``DELETE /chat/streams/{id}``: cancel the run; readers get an ``error`` ``cancelled``."""
    state = app_state(request)
    streams = state.service.streams
    request_id = request_id_of(request)
    if not is_authorized(request.headers.get("authorization"), state.settings.api_keys):
        return unauthorized_response(request_id)
    stream_id = request.path_params["stream_id"]
    info = await streams.store.info(stream_id)
    if info is None:
        return error_response("not_found", request_id, message=UNKNOWN_STREAM)
    if not info.finished and not streams.cancel(stream_id):
        await streams.store.request_cancel(stream_id)  # it runs on another worker
    access_record(request)["outcome"] = "cancelled" if not info.finished else "complete"
    return Response(status_code=204)
