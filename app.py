"""The ASGI app: routes, lifespan and middleware order.

``create_app(settings)`` builds it and does no I/O until its lifespan runs; importing this module
reads nothing. ``uvicorn --factory app:app_from_environment`` (what ``python -m chat`` runs)
reads the environment, checks it and builds the app; ``uvicorn app:app`` still works too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from chat.conversations.service import Conversations, check_data_dir
from chat.errors import CHOSEN_REFUSALS
from chat.http.cors import AllowlistCORSMiddleware
from chat.http.replies import http_exception_handler
from chat.http.routes import api_routes
from chat.metrics import build_metrics
from chat.models.backend import Backend
from chat.models.registry import build_backend
from chat.preflight import preflight
from chat.runtime import tune_gc
from chat.service.loop_lag import LagSampler, sample_loop_lag
from chat.settings import Settings, SettingsError, load_settings
from chat.state import AppState
from chat.streams.memory import MemoryStreamStore
from chat.streams.store import StreamStore
from logging_config import configure_logging
from logging_config.access import AccessLogMiddleware
from logging_config.correlation import CorrelationIdMiddleware

log = structlog.get_logger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    backend_factory: Callable[[Settings], Backend] = build_backend,
    lag_sampler: LagSampler = sample_loop_lag,
) -> Starlette:
    """Build the app; the backend and shared clients are made in the lifespan, once.

    ``lag_sampler`` feeds the adaptive stream limit; tests pass one that scripts the lag.
    """
    settings = settings if settings is not None else load_settings()
    configure_logging(
        level=settings.log_level, fmt=settings.log_format, log_content=settings.log_content
    )

    recorder = build_metrics(settings.metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        tune_gc()
        backend = backend_factory(settings)
        store, shared = await open_stream_store(settings)
        state = AppState(settings, backend, store, shared_store=shared, metrics=recorder)
        recorder.started(backend=backend.name, limit=state.slots.limit)
        conversations = await Conversations.open(settings, backend)
        state.service.conversations = conversations
        tasks = [
            asyncio.create_task(_load(state), name="backend-load"),
            asyncio.create_task(state.drainer.watch(), name="drain-watcher"),
            asyncio.create_task(conversations.maintain(), name="conversation-upkeep"),
        ]
        if state.adaptive_limit is not None:
            adaptive = state.adaptive_limit

            def observe(sample: Any) -> int:
                limit = adaptive.observe(sample)
                recorder.limit_changed(limit)  # chat_streams_limit follows it
                return limit

            tasks.append(asyncio.create_task(lag_sampler(observe), name="loop-lag"))
        if shared:
            tasks.append(
                asyncio.create_task(state.streams.watch_remote_cancels(), name="remote-cancels")
            )
            tasks.append(asyncio.create_task(state.streams.renew_leases(), name="stream-leases"))
            tasks.append(asyncio.create_task(store.watch_health(), name="store-health"))
        # Drain on SIGTERM before uvicorn closes its socket, so /readyz can still say 503.
        restore_sigterm = state.drainer.defer_sigterm()
        log.info(
            "started",
            backend=backend.name,
            model=settings.resolved_model(),
            max_streams=state.slots.cap,
            adaptive_limit=state.adaptive_limit is not None,
            auth=bool(settings.api_keys),
        )
        try:
            yield {"chat": state}
        finally:
            restore_sigterm()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.streams.aclose()
            await conversations.aclose()
            await store.aclose()
            await backend.aclose()
            recorder.stopped()
            log.info("stopped")

    middleware = [
        Middleware(CorrelationIdMiddleware),
        Middleware(
            AccessLogMiddleware,
            # The request counter of /metrics, fed when each response ends (not per chunk).
            on_finish=recorder.request_finished if recorder.enabled else None,
            shed_outcomes=CHOSEN_REFUSALS,
        ),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                AllowlistCORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"],
                expose_headers=[
                    "X-Request-ID",
                    "X-Stream-ID",
                    "X-Conversation-ID",
                    "Retry-After",
                    "Location",
                ],
                max_age=600,
            )
        )
    routes = [
        *api_routes(),
        # The demo page and its assets (see "demo page" below).
        Route("/", demo_page, methods=["GET"]),
        Mount("/static", DemoAssets(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_exception_handler},
        lifespan=lifespan,
    )


# --- demo page: GET / and /static/*, apart from the API --------------------------------------

STATIC_DIR: Final = Path(__file__).resolve().parent / "chat" / "static"
DEMO_HEADERS: Final = {
    # The page loads only its own files and talks only to this origin; no inline code runs.
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    # Revalidate on every load (cheap: ETag), so a deploy never pairs new HTML with old JS.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


async def demo_page(request: Request) -> Response:
    """``GET /``: the demo chat page."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=DEMO_HEADERS
    )


class DemoAssets(StaticFiles):
    """The page's scripts and styles, with the page's headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file, or the usual 404/405 (rendered as contract JSON by the app's handler)."""
        response = await super().get_response(path, scope)
        response.headers.update(DEMO_HEADERS)
        return response


async def open_stream_store(settings: Settings) -> tuple[StreamStore, bool]:
    """Redis Streams when REDIS_URL is set (readers may resume on any worker), else memory."""
    if settings.redis_url:
        from chat.streams.redis_store import RedisStreamStore

        store = await RedisStreamStore.connect(
            settings.redis_url,
            ttl_s=settings.stream_ttl_s,
            lease_s=settings.stream_lease_s,
        )
        return store, True
    return (
        MemoryStreamStore(ttl_s=settings.stream_ttl_s, max_finished=settings.stream_max_finished),
        False,
    )


async def _load(state: AppState) -> None:
    """Load the model in the background so /healthz answers and /readyz says 503 meanwhile."""
    try:
        await state.backend.start()
    except Exception:
        log.exception("backend_load_failed", backend=state.backend.name)
        # A server that can never become ready should not linger: stop it like SIGTERM would.
        os.kill(os.getpid(), signal.SIGTERM)
        return
    log.info("ready", backend=state.backend.name)


def app_from_environment() -> Starlette:
    """``create_app`` for ``uvicorn app:app``: a bad setting stops the process with one line."""
    try:
        settings = load_settings()
        preflight(settings)
        check_data_dir(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return create_app(settings)


_environment_app: Starlette | None = None


def __getattr__(name: str) -> Starlette:
    """``app``, built from the environment on first use (``uvicorn app:app``).

    Importing this module reads no environment, configures no logging and pings no Redis:
    ``from app import create_app`` stays free of side effects.
    """
    global _environment_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _environment_app is None:
        _environment_app = app_from_environment()
    return _environment_app
