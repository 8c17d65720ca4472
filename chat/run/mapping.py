"""The consumer's pure half: ``sdk_event -> Delta | Response | None``, and a finish reason."""

from __future__ import annotations

from typing import Final

from agents.stream_events import StreamEvent
from openai.types.responses import Response

from chat.events import Delta

TEXT_DELTA: Final = "response.output_text.delta"
_COMPLETED: Final = "response.completed"
_RAW: Final = "raw_response_event"


def map_sdk_event(event: StreamEvent) -> Delta | Response | None:
    """A text delta becomes a ``Delta``; the completed response is returned for the ``done``."""
    if event.type != _RAW:
        return None
    data = event.data
    kind = data.type
    if kind == TEXT_DELTA:
        return Delta(data.delta) if data.delta else None
    if kind == _COMPLETED:
        return data.response  # type: ignore[no-any-return,union-attr]
    return None


def finish_reason_of(response: Response | None) -> str:
    """``length`` when the provider stopped at the output token limit, else ``stop``."""
    if response is not None and response.incomplete_details is not None:
        if response.incomplete_details.reason == "max_output_tokens":
            return "length"
        return "content_filter"
    return "stop"
