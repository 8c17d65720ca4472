"""Cheap builders for the few Responses stream events the Agents SDK Runner needs.

The Runner forwards every event to the consumer and only inspects ``response.completed`` (its
``output`` and ``usage``). Our own models therefore emit: one ``response.created``, one
``response.output_text.delta`` per piece of text, and one ``response.completed``. Plain
constructors are used on purpose: ``model_construct`` is recursive and slower than validating.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Final, Literal

from agents import Model, ModelResponse, Usage
from agents.exceptions import ModelBehaviorError
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response import IncompleteDetails
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from chat.seams import mark_completed_without_usage, provider_request_id

MESSAGE_ID: Final = "msg_chat"
_NO_INPUT_DETAILS: Final = InputTokensDetails(cached_tokens=0, cache_write_tokens=0)
_NO_OUTPUT_DETAILS: Final = OutputTokensDetails(reasoning_tokens=0)

FinishReason = Literal["stop", "length"]


def _response(
    response_id: str,
    model: str,
    output: list[ResponseOutputMessage],
    usage: ResponseUsage | None,
    status: Literal["in_progress", "completed"],
    finish_reason: FinishReason = "stop",
) -> Response:
    return Response(
        id=response_id,
        created_at=time.time(),
        model=model,
        object="response",
        output=output,  # type: ignore[arg-type]
        parallel_tool_calls=False,
        tool_choice="none",
        tools=[],
        status=status,
        usage=usage,
        incomplete_details=(
            IncompleteDetails(reason="max_output_tokens") if finish_reason == "length" else None
        ),
    )


def created_event(response_id: str, model: str) -> ResponseCreatedEvent:
    """The first event of a response."""
    return ResponseCreatedEvent(
        type="response.created",
        response=_response(response_id, model, [], None, "in_progress"),
        sequence_number=0,
    )


def text_delta_event(text: str, sequence_number: int) -> ResponseTextDeltaEvent:
    """One piece of answer text."""
    return ResponseTextDeltaEvent(
        type="response.output_text.delta",
        item_id=MESSAGE_ID,
        output_index=0,
        content_index=0,
        delta=text,
        logprobs=[],
        sequence_number=sequence_number,
    )


def completed_event(
    *,
    response_id: str,
    model: str,
    text: str,
    input_tokens: int | None,
    output_tokens: int | None,
    sequence_number: int,
    finish_reason: FinishReason = "stop",
) -> ResponseCompletedEvent:
    """The terminal event: the whole message and its usage.

    A length-limited answer keeps the ``response.completed`` type (the Runner raises on
    ``response.incomplete``) and says so in ``incomplete_details``. Token counts of ``None``
    mean the provider reported no usage: the response then has none, and is marked so that
    the SDK still counts it as one request.
    """
    message = ResponseOutputMessage(
        id=MESSAGE_ID,
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )
    usage = None
    if input_tokens is not None or output_tokens is not None:
        usage = ResponseUsage(
            input_tokens=input_tokens or 0,
            output_tokens=output_tokens or 0,
            total_tokens=(input_tokens or 0) + (output_tokens or 0),
            input_tokens_details=_NO_INPUT_DETAILS,
            output_tokens_details=_NO_OUTPUT_DETAILS,
        )
    response = _response(response_id, model, [message], usage, "completed", finish_reason)
    if usage is None:
        mark_completed_without_usage(response)
    return ResponseCompletedEvent(
        type="response.completed", response=response, sequence_number=sequence_number
    )


async def collect_model_response(events: AsyncIterator[Any]) -> ModelResponse:
    """``get_response`` for models that stream: drain the stream, keep its completed response."""
    completed = None
    async for event in events:
        completed = event
    if completed is None or completed.type != "response.completed":
        raise ModelBehaviorError("the model stream ended without a completed response")
    response = completed.response
    usage = response.usage
    return ModelResponse(
        output=response.output,
        usage=Usage(
            requests=1,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
        ),
        response_id=response.id,
        request_id=provider_request_id(response),
    )


class StreamedModel(Model):
    """An SDK ``Model`` whose ``get_response`` is its own ``stream_response``, drained."""

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return await collect_model_response(self.stream_response(*args, **kwargs))
