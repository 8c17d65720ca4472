"""The operator's routes: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Final

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from chat.bodies import Health, Ready
from chat.http.checks import JSON_TYPE, is_authorized
from chat.http.replies import error_response, store_unavailable_response, unauthorized_response
from chat.http.scope import app_state, request_id_of
from chat.metrics import Metrics
from chat.openapi import document_bytes

_json: Final = msgspec.json.Encoder()
_HEALTHY: Final = _json.encode(Health())


async def healthz(request: Request) -> Response:
    """Liveness: the process serves."""
    return Response(_HEALTHY, media_type=JSON_TYPE)


async def readyz(request: Request) -> Response:
    """Readiness: the model backend is loaded, the stores answer, the process is not draining."""
    state = app_state(request)
    service = state.service
    code = service.unready_code()
    if code == "store_unavailable":
        return store_unavailable_response(request_id_of(request))
    if code is not None:
        return error_response(code, request_id_of(request))
    body = Ready(backend=state.backend.name, open_streams=service.open_streams)
    return Response(_json.encode(body), media_type=JSON_TYPE)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format, summed over all workers in multiprocess mode."""
    state = app_state(request)
    request_id = request_id_of(request)
    recorder = state.metrics
    if not isinstance(recorder, Metrics):
        return error_response("not_found", request_id, message="Metrics are off.")
    settings = state.settings
    if not settings.metrics_public and not is_authorized(
        request.headers.get("authorization"), settings.api_keys
    ):
        return unauthorized_response(request_id)
    # A thread: in multiprocess mode the scrape reads every worker's files.
    body, content_type = await anyio.to_thread.run_sync(
        recorder.render, request.headers.get("accept")
    )
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the OpenAPI 3.1 document of every route."""
    return Response(document_bytes(), media_type=JSON_TYPE)
