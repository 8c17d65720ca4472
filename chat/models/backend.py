"""A model backend: one Agents SDK ``Model`` plus its readiness, contention and lifetime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agents import Model, ModelSettings


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
        engine: Any = None,
    ) -> None:
        self.name = name
        self.model = model
        self.model_settings = model_settings
        self.max_in_flight = max_in_flight
        self._healthy = healthy
        self._on_contended = on_contended
        self._waiting = waiting
        # The local engine, whose tokenizer trims conversation history to its context.
        self.engine = engine
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
        """Reject input the model cannot take (too long for its context): InputTooLongError."""
        if self._check_input is not None:
            await self._check_input(instructions, message)

    async def aclose(self) -> None:
        """Release clients and models."""
        self._started = False
        if self._close is not None:
            await self._close()
