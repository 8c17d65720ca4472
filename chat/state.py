"""What the app builds once at start-up and every request shares (lifespan state)."""

from __future__ import annotations

import dataclasses

import anyio
from agents import Agent, ModelSettings

from chat.adaptive_limit import AdaptiveLimit, LimitPolicy
from chat.admission import StreamSlots
from chat.conversations.service import Conversations
from chat.lifecycle import Drainer
from chat.metrics import Metrics, NoMetrics
from chat.models.backend import Backend
from chat.run.agent_pool import AgentPool
from chat.run.deadlines import Deadlines
from chat.settings import Settings
from chat.streams.manager import StreamManager, StreamRun
from chat.streams.store import StreamStore


class AppState:
    """Settings, the backend, the agents and the counters of open streams."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        store: StreamStore,
        *,
        shared_store: bool = False,
        metrics: Metrics | NoMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else NoMetrics()
        self.backend = backend
        self.agents = AgentPool(
            Agent(name="assistant", instructions=settings.instructions, model=backend.model)
        )
        limit = settings.effective_max_streams()
        if backend.max_in_flight is not None:
            limit = min(limit, backend.max_in_flight)
        self.slots = StreamSlots(limit)
        # Steers slots.limit from the event loop's lag (the sampler runs in the app's lifespan).
        self.adaptive_limit: AdaptiveLimit | None = None
        if settings.adaptive_limit:
            policy = LimitPolicy(
                cap=limit,
                floor=min(limit, settings.adaptive_min_streams),
                target_lag_s=settings.adaptive_target_lag_ms / 1000,
            )
            self.adaptive_limit = AdaptiveLimit(self.slots, policy)
        self.drainer = Drainer(grace_s=settings.shutdown_grace_s)
        # Handed to every SSE response (sse-starlette sets it at shutdown); one per process
        # instead of an Event (and its waiter deque) per open stream.
        self.sse_shutdown = anyio.Event()
        self.streams = StreamManager(
            store,
            grace_s=settings.detached_grace_s,
            shared_store=shared_store,
            contended=backend.contended,
            on_finish=self._run_finished,
            lease_s=settings.stream_lease_s,
        )
        # A run nobody reads gives way at once to a request waiting for the model (one local
        # engine generates one answer at a time): see StreamManager.preempt_detached.
        backend.when_contended(self.streams.preempt_detached)
        # Opened in the lifespan (it needs I/O): the SQLite file or Redis.
        self.conversations: Conversations | None = None
        self.deadlines = Deadlines(
            first_token_s=settings.first_token_timeout_s,
            idle_s=settings.idle_timeout_s,
            total_s=settings.total_timeout_s,
        )

    def _run_finished(self, run: StreamRun) -> None:
        self.metrics.run_finished(run.stats, detached=run.detached, stop_code=run.control.code)

    def model_settings_for(self, request_id: str) -> ModelSettings:
        """The backend's settings plus our request id, so the provider's logs can be joined."""
        base = self.backend.model_settings
        headers = dict(base.extra_headers or {})
        headers["X-Request-ID"] = request_id
        return dataclasses.replace(base, extra_headers=headers)
