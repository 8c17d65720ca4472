"""What a run reports (``RunStats``) and how it is stopped from outside (``RunControl``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from chat.events import Usage


class RunStats:
    """What the access log reports about one stream; filled as the stream goes."""

    __slots__ = (
        "deltas",
        "finish_reason",
        "first_token_at",
        "outcome",
        "output_chars",
        "retry_after",
        "started_at",
        "upstream_request_id",
        "usage",
    )

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.deltas = 0
        self.output_chars = 0
        self.outcome: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.upstream_request_id: str | None = None
        # The provider's Retry-After (seconds) when it failed the run; JSON mode passes it on.
        self.retry_after: str | None = None

    def ttft_ms(self) -> float | None:
        """Milliseconds from the start of the run to the first delta."""
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started_at) * 1000, 2)


class RunControl:
    """Stops a run from outside (shutdown, DELETE) and remembers why, for its ``error`` event."""

    __slots__ = ("_cancel", "code")

    def __init__(self) -> None:
        self.code: str | None = None
        self._cancel: Callable[[], None] | None = None

    def stop(self, code: str) -> None:
        """End the run; its stream finishes with an ``error`` event carrying ``code``."""
        if self.code is None:
            self.code = code
        if self._cancel is not None:
            self._cancel()

    def attach(self, cancel: Callable[[], None]) -> None:
        """Connect to a started run; a stop that came first takes effect at once."""
        self._cancel = cancel
        if self.code is not None:
            cancel()
