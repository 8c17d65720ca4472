"""An Agents SDK ``Model`` on the official OpenAI client that decodes the stream with msgspec.

The client still owns transport, auth, retries and errors: the request goes out through its
public ``client.post(..., stream=True)``, so a 4xx/5xx raises the same ``APIStatusError``
subclasses after the same retries as the stock models. (``chat.completions.create`` would add
its parameter transform, ~0.6 ms of CPU per request here, for a body we build ourselves.) Only
the 200 body is read here: its SSE lines are decoded with msgspec (``wire.py``) instead of
one pydantic model per event, and the few SDK events the Runner needs are built directly
(``sdk_events``). Deltas that arrive in one network read leave as one event.

Supports what the service uses: text in, text out, usage, ``max_tokens``, extra headers, query
and body. Tools, handoffs, structured output and server-side conversation state need the stock
models (``CHAT_OPENAI_IMPL=stock``) and raise ``UserError`` here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any, Final, Literal

import anyio
import httpx2
import openai
from agents import Model, ModelSettings, ModelTracing
from agents.exceptions import UserError
from agents.items import ItemHelpers
from openai import AsyncOpenAI
from openai.types.responses import ResponseStreamEvent

from chat.models.openai.arrivals import Arrivals
from chat.models.openai.wire import (
    ChatCompletionsDecoder,
    ResponsesDecoder,
    StreamDecoder,
)
from chat.models.sdk_events import (
    StreamedModel,
    completed_event,
    created_event,
    text_delta_event,
)
from chat.seams import (
    FAKE_RESPONSES_ID,
    Converter,
    openai_request_options,
    set_provider_request_id,
)

OpenAIApi = Literal["responses", "chat_completions"]

# After the last event only the end of the chunked body is left; a server that keeps the body
# open longer loses its keep-alive connection instead of delaying our answer.
_DRAIN_S: Final = 0.1
_CONNECTION_ERRORS: Final = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream)
_UNSUPPORTED_SETTINGS: Final = (
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "verbosity",
    "response_include",
    "top_logprobs",
    "context_management",
    "prompt_cache_retention",
    "prompt_cache_options",
)


class FastOpenAIModel(StreamedModel):
    """Streams a Responses or Chat Completions answer as the few events the Runner needs."""

    def __init__(self, client: AsyncOpenAI, model: str, api: OpenAIApi) -> None:
        self.model = model
        self.api = api
        self._client = client
        self._path = "/responses" if api == "responses" else "/chat/completions"

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings,
        tools: list[Any] | None = None,
        output_schema: Any = None,
        handoffs: list[Any] | None = None,
        tracing: ModelTracing = ModelTracing.DISABLED,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> AsyncIterator[ResponseStreamEvent]:
        if tools or handoffs or output_schema is not None:
            raise UserError("the fast OpenAI model streams text only; use CHAT_OPENAI_IMPL=stock")
        if previous_response_id or conversation_id or prompt is not None:
            raise UserError("server-side conversation state needs CHAT_OPENAI_IMPL=stock")
        if self.api == "responses":
            body = responses_body(self.model, system_instructions, input, model_settings)
            decoder: StreamDecoder = ResponsesDecoder()
        else:
            body = chat_completions_body(self.model, system_instructions, input, model_settings)
            decoder = ChatCompletionsDecoder()
        # Retries, auth and status errors happen in here, before the first byte of the body.
        response: httpx2.Response = await self._client.post(
            self._path,
            cast_to=httpx2.Response,
            body=body,
            options=openai_request_options(model_settings),
            stream=True,
        )
        request = response.request
        arrivals = Arrivals(response.aiter_bytes())
        try:
            yield created_event(FAKE_RESPONSES_ID, self.model)
            parts: list[str] = []
            sequence = 1
            try:
                while True:
                    # Chunks that arrived together leave as one delta: one event per read.
                    batch = await arrivals.next_batch()
                    if not batch:
                        text = decoder.end()
                    else:
                        text = decoder.feed(batch[0] if len(batch) == 1 else b"".join(batch))
                    if text:
                        parts.append(text)
                        yield text_delta_event(text, sequence)
                        sequence += 1
                        if not arrivals.waiting:
                            await _let_consumers_run()
                    if not batch or decoder.finished or decoder.failure is not None:
                        break
            except httpx2.TimeoutException as exc:
                raise openai.APITimeoutError(request=request) from exc
            except _CONNECTION_ERRORS as exc:
                raise openai.APIConnectionError(request=request) from exc
            _raise_unless_complete(decoder, request)
            await _read_to_end(arrivals)
        finally:
            # Cancelled or abandoned mid-stream: this drops the connection, so the upstream
            # stops generating. After a body read to its end it does nothing.
            await arrivals.aclose()
            await response.aclose()
        completed = completed_event(
            response_id=decoder.response_id or FAKE_RESPONSES_ID,
            model=self.model,
            text="".join(parts),
            input_tokens=decoder.input_tokens,
            output_tokens=decoder.output_tokens,
            sequence_number=sequence,
            finish_reason=decoder.finish_reason or "stop",
        )
        # The Runner copies this onto ModelResponse.request_id, as it does for the stock models.
        set_provider_request_id(completed.response, response.headers.get("x-request-id"))
        yield completed


def _raise_unless_complete(decoder: StreamDecoder, request: httpx2.Request) -> None:
    """An in-band error or a body cut before the last event ends the run like the stock path."""
    failure = decoder.failure
    if failure is not None:
        raise openai.APIError(failure.message, request, body=failure.body)
    if not decoder.finished:
        raise openai.APIConnectionError(
            message="The upstream closed the stream before its last event.", request=request
        )


async def _let_consumers_run() -> None:
    """Give the loop to the tasks that forward this delta before the run's end-of-turn work.

    With no read left to wait for (the whole answer came in one read), the run task would go on
    to finish the turn (1-2 ms of SDK work) before it ever suspends, and the delta would wait for
    it. Two turns of the loop carry it through the consumer and the stream log to the socket.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def _read_to_end(arrivals: Arrivals) -> None:
    """Consume what follows the last event so the keep-alive connection goes back to the pool."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await arrivals.next_batch():
                pass
    except (TimeoutError, *_CONNECTION_ERRORS):
        pass  # the answer is complete; closing the response drops the connection instead


def chat_completions_body(
    model: str,
    system_instructions: str | None,
    input: str | list[Any],
    settings: ModelSettings,
) -> dict[str, Any]:
    """The JSON body of a streamed ``POST /chat/completions``."""
    messages: list[Any] = []
    if system_instructions:
        messages.append({"role": "system", "content": system_instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    else:
        messages.extend(Converter.items_to_messages(input, model=model))
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    # Compatible servers send usage only when asked; OpenAI sends it either way.
    if settings.include_usage is not False:
        body["stream_options"] = {"include_usage": True}
    _put(body, "max_tokens", settings.max_tokens)
    _put(body, "frequency_penalty", settings.frequency_penalty)
    _put(body, "presence_penalty", settings.presence_penalty)
    return _common(body, settings)


def responses_body(
    model: str,
    system_instructions: str | None,
    input: str | list[Any],
    settings: ModelSettings,
) -> dict[str, Any]:
    """The JSON body of a streamed ``POST /responses``."""
    body: dict[str, Any] = {
        "model": model,
        "input": input if isinstance(input, str) else ItemHelpers.input_to_new_input_list(input),
        "stream": True,
    }
    _put(body, "instructions", system_instructions or None)
    _put(body, "max_output_tokens", settings.max_tokens)
    _put(body, "truncation", settings.truncation)
    return _common(body, settings)


def _common(body: dict[str, Any], settings: ModelSettings) -> dict[str, Any]:
    for name in _UNSUPPORTED_SETTINGS:
        if getattr(settings, name) is not None:
            raise UserError(f"model setting {name!r} needs CHAT_OPENAI_IMPL=stock")
    _put(body, "temperature", settings.temperature)
    _put(body, "top_p", settings.top_p)
    _put(body, "store", settings.store)
    _put(body, "metadata", settings.metadata)
    if settings.extra_args:
        body.update(settings.extra_args)
    return body


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


def build_fast_openai_model(client: AsyncOpenAI, model_name: str, api: OpenAIApi) -> Model:
    """The msgspec-decoding model for ``api`` over ``client``."""
    return FastOpenAIModel(client, model_name, api)
