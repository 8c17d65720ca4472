"""What a started run records for its caller as it goes: the terminal event, the text."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from chat.events import ChatEvent, Delta, Done, Error
from chat.run.control import RunStats
from chat.streams.manager import StreamRun


class ChatRun:
    """A started run as its caller sees it: ids, figures, and what it recorded on the way.

    ``terminal`` is the run's ``done`` or ``error`` event once it passed; ``text()`` the answer
    delivered so far, when the run was started with ``keep_text``.
    """

    __slots__ = ("_parts", "conversation_id", "history_turns", "stream", "terminal")

    def __init__(self, *, keep_text: bool) -> None:
        self.stream: StreamRun | None = None
        self.conversation_id: str | None = None
        self.history_turns: int | None = None
        self.terminal: Done | Error | None = None
        self._parts: list[str] | None = [] if keep_text else None

    @property
    def stream_id(self) -> str:
        """The id readers follow the run by."""
        assert self.stream is not None, "started"
        return self.stream.stream_id

    @property
    def stats(self) -> RunStats:
        """The run's figures, filled as it goes."""
        assert self.stream is not None, "started"
        return self.stream.stats

    @property
    def store_lost(self) -> bool:
        """The stream store failed under the run (its readers got ``store_unavailable``)."""
        return self.stream is not None and self.stream.store_lost

    def text(self) -> str:
        """The deltas' text so far ('' unless started with ``keep_text``)."""
        return "".join(self._parts) if self._parts is not None else ""

    async def recording(
        self, events: AsyncIterator[ChatEvent], on_end: Callable[[], None]
    ) -> AsyncIterator[ChatEvent]:
        """Pass ``events`` through, keeping the text (when asked) and the terminal event.

        ``on_end`` runs when they end, however they end (one generator layer for both: every
        token passes through it).
        """
        parts = self._parts
        try:
            async with aclosing(events):
                async for event in events:
                    if type(event) is Delta:
                        if parts is not None:
                            parts.append(event.text)
                    else:
                        self.terminal = event  # type: ignore[assignment]
                    yield event
        finally:
            on_end()
