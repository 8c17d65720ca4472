"""The embedded local model as an Agents SDK ``Model``: Responses events over ``LocalEngine``.

The engine (``engine.py``) owns the llama.cpp worker process and the FIFO of requests;
this module turns Responses-format input into chat messages and the engine's text pieces into
the events the Runner expects.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from agents import ModelSettings, ModelTracing, Tool
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseStreamEvent
from openai.types.responses.response_prompt_param import ResponsePromptParam

from chat.models.local.engine import DEFAULT_CONTEXT_TOKENS, LocalEngine
from chat.models.local.files import LocalModelError, default_model_path, validate_model_file
from chat.models.local.jobs import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    ChatMessage,
    ContextOverflowError,
    EngineCrashedError,
    EngineNotReadyError,
    EngineOverloadedError,
    Finished,
    GenerationError,
    SamplingParams,
    build_messages,
)
from chat.models.sdk_events import (
    StreamedModel,
    completed_event,
    created_event,
    text_delta_event,
)

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "ContextOverflowError",
    "EngineCrashedError",
    "EngineNotReadyError",
    "EngineOverloadedError",
    "GenerationError",
    "LocalEngine",
    "LocalModel",
    "LocalModelError",
    "UnsupportedInputError",
    "build_messages",
    "default_model_path",
    "to_chat_messages",
    "validate_model_file",
]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = {"input_text", "output_text", "text"}


class UnsupportedInputError(ValueError):
    """Input the local model cannot take: tools, images, files, non-message items."""


def to_chat_messages(
    system_instructions: str | None, input: str | list[TResponseInputItem]
) -> list[ChatMessage]:
    """Responses-format input (a string or message items) -> chat messages for the template."""
    if isinstance(input, str):
        return build_messages(system_instructions, input)
    messages: list[ChatMessage] = []
    if system_instructions:
        messages.append({"role": "system", "content": system_instructions})
    for item in input:
        fields = _as_mapping(item)
        kind = fields.get("type", "message")
        if kind != "message":
            raise UnsupportedInputError(f"the local model cannot take {kind!r} input items")
        role = _ROLES.get(str(fields.get("role")))
        if role is None:
            raise UnsupportedInputError(f"the local model cannot take role {fields.get('role')!r}")
        messages.append({"role": role, "content": _text_of(fields.get("content"))})
    return messages


def _as_mapping(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    dump = getattr(item, "model_dump", None)  # openai pydantic items, e.g. a previous output
    if callable(dump):
        fields: Mapping[str, Any] = dump(exclude_none=True)
        return fields
    raise UnsupportedInputError(f"the local model cannot take {type(item).__name__} input items")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnsupportedInputError("message content must be a string or a list of text parts")
    texts: list[str] = []
    for part in content:
        fields = _as_mapping(part)
        kind = fields.get("type")
        if kind not in _TEXT_PARTS:
            raise UnsupportedInputError(f"the local model cannot take {kind!r} content")
        texts.append(str(fields.get("text", "")))
    return "\n".join(texts)


class LocalModel(StreamedModel):
    """An Agents SDK ``Model`` backed by the embedded llama.cpp engine."""

    def __init__(self, engine: LocalEngine, *, model_name: str = "smollm2-135m-instruct") -> None:
        self.engine = engine
        self.model_name = model_name

    def sampling_params(self, model_settings: ModelSettings) -> SamplingParams:
        """The engine's limit, lowered by ``model_settings.max_tokens`` when that is set."""
        max_tokens = self.engine.max_output_tokens
        if model_settings.max_tokens is not None:
            max_tokens = max(1, min(max_tokens, model_settings.max_tokens))
        temperature = model_settings.temperature
        top_p = model_settings.top_p
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
            top_p=DEFAULT_TOP_P if top_p is None else top_p,
        )

    def _prepare(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
    ) -> list[ChatMessage]:
        # A 135M chat model cannot call tools or follow a JSON schema; failing loudly beats
        # answering as if they were not there.
        if tools or handoffs:
            raise UnsupportedInputError("the local model does not support tools or handoffs")
        if output_schema is not None and not output_schema.is_plain_text():
            raise UnsupportedInputError("the local model only produces plain text")
        return to_chat_messages(system_instructions, input)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Stream ``response.created``, one text delta per token, then ``response.completed``."""
        messages = self._prepare(system_instructions, input, tools, output_schema, handoffs)
        params = self.sampling_params(model_settings)
        response_id = _response_id()
        yield created_event(response_id, self.model_name)
        pieces: list[str] = []
        sequence = 1
        stream = self.engine.generate(messages, params)
        async with aclosing(stream):
            async for item in stream:
                if type(item) is str:
                    pieces.append(item)
                    yield text_delta_event(item, sequence)
                    sequence += 1
                elif isinstance(item, Finished):
                    yield completed_event(
                        response_id=response_id,
                        model=self.model_name,
                        text="".join(pieces),
                        input_tokens=item.prompt_tokens,
                        output_tokens=item.completion_tokens,
                        sequence_number=sequence,
                        finish_reason="length" if item.hit_max_tokens else "stop",
                    )
                    return
        raise GenerationError("the local model stopped without finishing")


def _response_id() -> str:
    return f"resp_local_{uuid.uuid4().hex}"
