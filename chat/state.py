"""What the app builds once at start-up and every request shares (lifespan state)."""

from __future__ import annotations

import anyio

from chat.metrics import Metrics, NoMetrics
from chat.models.backend import Backend
from chat.service.adaptive_limit import AdaptiveLimit, LimitPolicy
from chat.service.admission import StreamSlots
from chat.service.drain import Drainer
from chat.service.runs import ChatService
from chat.settings import Settings
from chat.streams.manager import StreamManager, StreamRun
from chat.streams.store import StreamStore


class AppState:
    """The settings, the metrics, and the service with its parts, wired together once."""

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
        limit = settings.effective_max_streams()
        if backend.max_in_flight is not None:
            limit = min(limit, backend.max_in_flight)
        slots = StreamSlots(limit)
        # Steers slots.limit from the event loop's lag (the sampler runs in the app's lifespan).
        self.adaptive_limit: AdaptiveLimit | None = None
        if settings.adaptive_limit:
            policy = LimitPolicy(
                cap=limit,
                floor=min(limit, settings.adaptive_min_streams),
                target_lag_s=settings.adaptive_target_lag_ms / 1000,
            )
            self.adaptive_limit = AdaptiveLimit(slots, policy)
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
        self.service = ChatService(
            settings, backend, self.streams, slots, self.drainer, recorder=self.metrics
        )

    @property
    def slots(self) -> StreamSlots:
        """The admission slots (their limit is what the adaptive limit moves)."""
        return self.service.slots

    def _run_finished(self, run: StreamRun) -> None:
        self.metrics.run_finished(run.stats, detached=run.detached, stop_code=run.control.code)
