"""One access log line per HTTP request, with fields the endpoint adds while it runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ACCESS_STATE_KEY",
    "AccessLogMiddleware",
    "access_fields",
    "access_level",
    "elapsed_ms",
    "response_status",
]

ACCESS_STATE_KEY: Final = "access"
"""``scope["state"]["access"]``: the dict an endpoint fills (``ttft_ms``, ``outcome``...)."""

_log = structlog.stdlib.get_logger(__name__)

FinishHook = Callable[[Scope, int | None, Mapping[str, object]], None]
"""Called once per request after its line is written: (scope, status, the endpoint's record)."""

# Fields the middleware owns; an endpoint's record cannot overwrite them. `event` would clash
# with the log call's own argument.
_OWN_FIELDS: Final = frozenset({"event", "method", "path", "status", "duration_ms", "client"})


def elapsed_ms(start: float, end: float) -> float:
    """Milliseconds between two monotonic clock readings, to two decimals."""
    return round((end - start) * 1000, 2)


def response_status(status: int | None, raised: bool) -> int | None:
    """The status to log: 500 if the app raised, None if no response ever started."""
    return 500 if raised else status


def access_level(status: int | None, outcome: object, shed_outcomes: frozenset[str]) -> str:
    """The access line's level: ``error`` for a 5xx, unless the service chose to answer it.

    A 5xx whose outcome is in ``shed_outcomes`` (load shedding, a drain) is the service working
    as designed: ``warning``, so an alert on error lines does not fire on every refusal.
    """
    if status is None or status < 500:
        return "info"
    return "warning" if outcome in shed_outcomes else "error"


def access_fields(
    scope: Scope,
    status: int | None,
    duration_ms: float,
    record: Mapping[str, object],
    *,
    raised: bool = False,
    log_client: bool = True,
) -> dict[str, Any]:
    """The access line's fields: the request, the outcome, then what the endpoint recorded."""
    fields: dict[str, Any] = {
        "method": scope.get("method"),
        # `path` never holds the query string, which can carry tokens.
        "path": scope.get("path"),
        "status": status,
        "duration_ms": duration_ms,
    }
    client = scope.get("client")
    if log_client and client:
        fields["client"] = client[0]
    fields.update((key, value) for key, value in record.items() if key not in _OWN_FIELDS)
    if raised:
        fields.setdefault("outcome", "internal_error")
    elif status is None:
        fields.setdefault("outcome", "client_disconnected")
    return fields


class AccessLogMiddleware:
    """Log one ``request`` line per HTTP request; place it inside `CorrelationIdMiddleware`.

    Before calling the app it puts an empty dict at ``scope["state"]["access"]``; whatever the
    endpoint writes there (also from a stream that outlives the endpoint function) is in the
    line, which is written once the response finished. ``on_finish`` (the request counter of
    ``/metrics``) gets the same figures then, so nothing else has to wrap the streaming path.
    A 5xx is logged at ``error``, or at ``warning`` when its ``outcome`` is in ``shed_outcomes``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        log_client: bool = True,
        clock: Callable[[], float] = time.perf_counter,
        on_finish: FinishHook | None = None,
        shed_outcomes: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.log_client = log_client
        self.clock = clock
        self.on_finish = on_finish
        self.shed_outcomes = shed_outcomes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        start = self.clock()
        record: dict[str, object] = {}
        # A copy, as in the correlation middleware: the record must never land in shared state.
        scope["state"] = {**scope.get("state", {}), ACCESS_STATE_KEY: record}
        status: int | None = None
        raised = False
        cancelled = False

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except Exception:
            raised = True
            raise
        except BaseException:
            cancelled = True  # cancellation and shutdown: logged, never swallowed
            raise
        finally:
            logged_status = response_status(status, raised)
            fields = access_fields(
                scope,
                logged_status,
                elapsed_ms(start, self.clock()),
                record,
                raised=raised,
                log_client=self.log_client,
            )
            if cancelled:
                fields.setdefault("outcome", "cancelled")
            level = access_level(logged_status, fields.get("outcome"), self.shed_outcomes)
            getattr(_log, level)("request", **fields)
            if self.on_finish is not None:
                self.on_finish(scope, logged_status, record)
