"""What the middleware and the lifespan put in a request's scope, read in one place."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from chat.state import AppState


def app_state(request: Request) -> AppState:
    """The state the lifespan built (``chat.state.AppState``)."""
    state: AppState = request.state.chat
    return state


def request_id_of(request: Request) -> str:
    """The correlation id the middleware gave this request."""
    state = request.scope.get("state") or {}
    return str(state.get("request_id") or "-")


def access_record(request: Request) -> dict[str, Any]:
    """The per-request dict the access log middleware writes out when the request ends.

    Empty (and thrown away) when the app runs without that middleware.
    """
    state = request.scope.get("state")
    if isinstance(state, dict):
        record = state.get("access")
        if isinstance(record, dict):
            return record
    return {}
