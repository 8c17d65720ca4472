"""The msgspec stream decoders and the fast OpenAI model over a mocked transport."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pytest
from agents import ModelSettings
from agents.exceptions import UserError
from agents.usage import _requests_for_response_without_usage
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI

from chat.models.openai.fast import (
    FastOpenAIModel,
    chat_completions_body,
    responses_body,
)
from chat.models.openai.wire import (
    MAX_LINE_BYTES,
    ChatCompletionsDecoder,
    ResponsesDecoder,
    StreamDecoder,
)
from chat.models.sdk_events import completed_event
from chat.seams import openai_request_options

# --- wire fixtures ----------------------------------------------------------------------------


def sse(*payloads: Any, event: str | None = None, eol: bytes = b"\n") -> bytes:
    """SSE frames for JSON payloads (bytes are sent as they are, e.g. ``[DONE]``)."""
    out = b""
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if event is not None:
            out += b"event: " + event.encode() + eol
        out += b"data: " + data + eol + eol
    return out


def chat_chunk(
    content: str | None = None, finish: str | None = None, index: int = 0
) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice]}


USAGE_CHUNK = {
    "id": "chatcmpl-1",
    "choices": [],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}
CHAT_STREAM = (
    sse({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    + sse(chat_chunk("Hel"), chat_chunk("lo"), chat_chunk("!"))
    + sse(chat_chunk(finish="stop"), USAGE_CHUNK, b"[DONE]")
)


def responses_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "sequence_number": 0, **fields}


def text_delta(text: str) -> dict[str, Any]:
    return responses_event(
        "response.output_text.delta", item_id="msg_1", output_index=0, delta=text, logprobs=[]
    )


def response_body(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": status, "output": [], **fields}


RESPONSES_USAGE = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
RESPONSES_STREAM = (
    sse(responses_event("response.created", response=response_body("in_progress")))
    + sse(text_delta("Hi"), text_delta(" there"))
    + sse(
        responses_event(
            "response.completed", response=response_body("completed", usage=RESPONSES_USAGE)
        )
    )
)


def feed_all(decoder: StreamDecoder, chunks: list[bytes]) -> str:
    text = "".join(decoder.feed(chunk) for chunk in chunks)
    return text + decoder.end()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# --- Chat Completions decoder -----------------------------------------------------------------


class TestChatCompletionsDecoder:
    def test_feed_when_whole_stream_in_one_read_then_text_joined_usage_and_finished(self) -> None:
        decoder = ChatCompletionsDecoder()
        assert decoder.feed(CHAT_STREAM) == "Hello!"
        assert decoder.finished
        assert decoder.finish_reason == "stop"
        assert (decoder.input_tokens, decoder.output_tokens) == (7, 3)
        assert decoder.failure is None

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=len(CHAT_STREAM)), max_size=12))
    def test_feed_when_split_anywhere_then_same_text(self, cuts: list[int]) -> None:
        decoder = ChatCompletionsDecoder()
        assert feed_all(decoder, split(CHAT_STREAM, cuts)) == "Hello!"
        assert decoder.finished

    def test_feed_when_crlf_line_ends_then_same_text(self) -> None:
        stream = sse(chat_chunk("a"), chat_chunk("b", finish="length"), b"[DONE]", eol=b"\r\n")
        decoder = ChatCompletionsDecoder()
        assert decoder.feed(stream) == "ab"
        assert decoder.finished
        assert decoder.finish_reason == "length"

    def test_feed_when_no_space_after_colon_then_payload_read(self) -> None:
        decoder = ChatCompletionsDecoder()
        assert decoder.feed(b'data:{"choices":[{"delta":{"content":"x"}}]}\n\n') == "x"

    def test_feed_when_event_and_comment_lines_then_ignored(self) -> None:
        stream = b": keep-alive\n" + sse(chat_chunk("x"), event="message") + b": ping\n\n"
        assert ChatCompletionsDecoder().feed(stream) == "x"

    def test_feed_when_usage_missing_then_tokens_none(self) -> None:
        decoder = ChatCompletionsDecoder()
        decoder.feed(sse(chat_chunk("x"), chat_chunk(finish="stop"), b"[DONE]"))
        assert (decoder.input_tokens, decoder.output_tokens) == (None, None)

    def test_feed_when_other_choice_indexes_then_only_choice_zero(self) -> None:
        stream = sse(chat_chunk("yes"), chat_chunk("no", index=1), b"[DONE]")
        assert ChatCompletionsDecoder().feed(stream) == "yes"

    def test_feed_when_in_band_error_after_text_then_text_kept_and_failure(self) -> None:
        error = {"message": "boom", "type": "server_error", "code": "server_error"}
        decoder = ChatCompletionsDecoder()
        assert decoder.feed(sse(chat_chunk("a"), chat_chunk("b"), {"error": error})) == "ab"
        assert decoder.failure is not None
        assert decoder.failure.message == "boom"
        assert decoder.failure.body == error
        assert not decoder.finished

    def test_feed_when_malformed_json_then_failure(self) -> None:
        decoder = ChatCompletionsDecoder()
        assert decoder.feed(sse(chat_chunk("a")) + b"data: {nope\n\n") == "a"
        assert decoder.failure is not None

    @pytest.mark.parametrize("bad", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"])
    def test_feed_when_text_not_utf8_then_earlier_text_kept_and_failure(self, bad: bytes) -> None:
        broken = b'data: {"choices":[{"index":0,"delta":{"content":"x' + bad + b'"}}]}\n\n'
        decoder = ChatCompletionsDecoder()
        assert decoder.feed(sse(chat_chunk("a"), chat_chunk("b")) + broken + sse(b"[DONE]")) == "ab"
        assert decoder.failure is not None
        assert "UTF-8" in decoder.failure.message
        assert not decoder.finished

    def test_end_when_body_ends_after_finish_without_done_then_finished(self) -> None:
        decoder = ChatCompletionsDecoder()
        decoder.feed(sse(chat_chunk("a"), chat_chunk(finish="stop")))
        assert not decoder.finished
        assert decoder.end() == ""
        assert decoder.finished

    def test_end_when_last_event_lacks_blank_line_then_dispatched(self) -> None:
        decoder = ChatCompletionsDecoder()
        assert decoder.feed(sse(chat_chunk("a")) + b'data: {"choices":[{"delta":') == "a"
        assert decoder.feed(b'{"content":"b"},"finish_reason":"stop"}]}') == ""
        assert decoder.end() == "b"
        assert decoder.finished

    def test_end_when_cut_before_finish_then_not_finished(self) -> None:
        decoder = ChatCompletionsDecoder()
        decoder.feed(sse(chat_chunk("a")))
        decoder.end()
        assert not decoder.finished
        assert decoder.failure is None

    def test_feed_when_line_never_ends_then_failure(self) -> None:
        decoder = ChatCompletionsDecoder()
        decoder.feed(b"data: " + b"x" * (MAX_LINE_BYTES + 1))
        assert decoder.failure is not None


# --- Responses decoder ------------------------------------------------------------------------


class TestResponsesDecoder:
    def test_feed_when_delta_not_utf8_then_earlier_text_kept_and_failure(self) -> None:
        good = sse(responses_event("response.output_text.delta", delta="Hi "))
        broken = b'data: {"type":"response.output_text.delta","delta":"\xc0\xaf"}\n\n'
        decoder = ResponsesDecoder()
        assert decoder.feed(good + broken) == "Hi "
        assert decoder.failure is not None
        assert not decoder.finished

    def test_feed_when_completed_then_text_usage_id(self) -> None:
        decoder = ResponsesDecoder()
        assert decoder.feed(RESPONSES_STREAM) == "Hi there"
        assert decoder.finished
        assert decoder.finish_reason == "stop"
        assert (decoder.input_tokens, decoder.output_tokens) == (5, 2)
        assert decoder.response_id == "resp_1"

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=len(RESPONSES_STREAM)), max_size=12))
    def test_feed_when_split_anywhere_then_same_text(self, cuts: list[int]) -> None:
        decoder = ResponsesDecoder()
        assert feed_all(decoder, split(RESPONSES_STREAM, cuts)) == "Hi there"
        assert decoder.finished

    def test_feed_when_incomplete_for_max_tokens_then_finished_with_length(self) -> None:
        body = response_body(
            "incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=RESPONSES_USAGE
        )
        decoder = ResponsesDecoder()
        decoder.feed(sse(text_delta("a"), responses_event("response.incomplete", response=body)))
        assert decoder.finished
        assert decoder.finish_reason == "length"
        assert decoder.output_tokens == 2

    def test_feed_when_incomplete_for_other_reason_then_failure(self) -> None:
        body = response_body("incomplete", incomplete_details={"reason": "content_filter"})
        decoder = ResponsesDecoder()
        decoder.feed(sse(responses_event("response.incomplete", response=body)))
        assert decoder.failure is not None
        assert "content_filter" in decoder.failure.message

    def test_feed_when_failed_then_failure_with_error(self) -> None:
        error = {"code": "server_error", "message": "down"}
        body = response_body("failed", error=error)
        decoder = ResponsesDecoder()
        text = decoder.feed(sse(text_delta("a"), responses_event("response.failed", response=body)))
        assert text == "a"
        assert decoder.failure is not None
        assert (decoder.failure.message, decoder.failure.body) == ("down", error)

    def test_feed_when_error_event_then_failure(self) -> None:
        event = responses_event("error", code="server_error", message="oops", param=None)
        decoder = ResponsesDecoder()
        decoder.feed(sse(event, event="error"))
        assert decoder.failure is not None
        assert decoder.failure.message == "oops"

    def test_feed_when_other_events_then_no_text(self) -> None:
        event = responses_event("response.output_text.done", text="whole text")
        decoder = ResponsesDecoder()
        assert decoder.feed(sse(event)) == ""
        assert not decoder.finished


# --- request bodies ---------------------------------------------------------------------------


class TestRequestBodies:
    def test_chat_body_when_settings_then_usage_asked_and_limits_sent(self) -> None:
        body = chat_completions_body("m", "Be brief.", "hi", ModelSettings(max_tokens=5))
        assert body == {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 5,
        }

    def test_chat_body_when_include_usage_false_then_not_asked(self) -> None:
        body = chat_completions_body("m", None, "hi", ModelSettings(include_usage=False))
        assert "stream_options" not in body
        assert body["messages"] == [{"role": "user", "content": "hi"}]

    def test_chat_body_when_input_items_then_converted_by_sdk(self) -> None:
        items: list[Any] = [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
        ]
        messages = chat_completions_body("m", None, items, ModelSettings())["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]

    def test_responses_body_when_settings_then_instructions_and_max_output_tokens(self) -> None:
        body = responses_body("m", "Be brief.", "hi", ModelSettings(max_tokens=5, temperature=0))
        assert body == {
            "model": "m",
            "input": "hi",
            "stream": True,
            "instructions": "Be brief.",
            "max_output_tokens": 5,
            "temperature": 0,
        }

    def test_request_options_when_extra_headers_then_sent_with_bearer_auth(self) -> None:
        settings = ModelSettings(extra_headers={"X-Request-ID": "r1"}, extra_query={"q": "1"})
        assert openai_request_options(settings) == {
            "security": {"bearer_auth": True},
            "headers": {"X-Request-ID": "r1"},
            "params": {"q": "1"},
        }

    def test_body_when_unsupported_setting_then_user_error(self) -> None:
        with pytest.raises(UserError, match="tool_choice"):
            chat_completions_body("m", None, "hi", ModelSettings(tool_choice="auto"))


def test_completed_event_when_usage_unknown_then_none_and_counted_as_one_request() -> None:
    event = completed_event(
        response_id="r", model="m", text="t", input_tokens=None, output_tokens=None,
        sequence_number=3,
    )  # fmt: skip
    assert event.response.usage is None
    assert _requests_for_response_without_usage(event.response) == 1


# --- the model over a mocked transport --------------------------------------------------------

Handler = Callable[[httpx2.Request], httpx2.Response]


class Body(httpx2.AsyncByteStream):
    """A response body in the given pieces; remembers whether it was closed."""

    def __init__(self, pieces: list[bytes], error: Exception | None = None) -> None:
        self.pieces = pieces
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


def client_for(handler: Handler) -> AsyncOpenAI:
    transport = httpx2.MockTransport(handler)
    return AsyncOpenAI(
        api_key="sk-test",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )


def streaming(body: Body, requests: list[httpx2.Request] | None = None) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if requests is not None:
            requests.append(request)
        headers = {"content-type": "text/event-stream", "x-request-id": "req_up_1"}
        return httpx2.Response(200, headers=headers, stream=body)

    return handler


async def collect(model: FastOpenAIModel, settings: ModelSettings | None = None) -> list[Any]:
    events = []
    async for event in model.stream_response("Be brief.", "hi", settings or ModelSettings()):
        events.append(event)
    return events


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("api", "stream"), [("chat_completions", CHAT_STREAM), ("responses", RESPONSES_STREAM)]
)
async def test_model_when_stream_completes_then_created_deltas_completed_with_request_id(
    api: Any, stream: bytes
) -> None:
    requests: list[httpx2.Request] = []
    body = Body([stream[:40], stream[40:]])
    model = FastOpenAIModel(client_for(streaming(body, requests)), "m", api)
    settings = ModelSettings(extra_headers={"X-Request-ID": "ours"}, max_tokens=9)
    events = await collect(model, settings)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    response = events[-1].response
    assert response.output[0].content[0].text == "".join(deltas)
    assert response._request_id == "req_up_1"
    assert response.usage is not None
    sent = json.loads(requests[0].content)
    assert sent["stream"] is True
    assert sent.get("max_tokens", sent.get("max_output_tokens")) == 9
    assert requests[0].headers["x-request-id"] == "ours"
    assert requests[0].headers["authorization"] == "Bearer sk-test"


@pytest.mark.anyio
async def test_model_when_upstream_answers_429_then_rate_limit_error() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(429, json={"error": {"message": "slow down", "type": "rate"}})

    model = FastOpenAIModel(client_for(handler), "m", "chat_completions")
    with pytest.raises(openai.RateLimitError):
        await collect(model)


@pytest.mark.anyio
async def test_model_when_in_band_error_then_api_error_after_text() -> None:
    body = Body([sse(chat_chunk("a"), {"error": {"message": "boom"}})])
    model = FastOpenAIModel(client_for(streaming(body)), "m", "chat_completions")
    seen: list[Any] = []

    async def consume() -> None:
        async for event in model.stream_response(None, "hi", ModelSettings()):
            seen.append(event)

    with pytest.raises(openai.APIError) as info:
        await consume()
    assert type(info.value) is openai.APIError
    assert [e.delta for e in seen if e.type == "response.output_text.delta"] == ["a"]


@pytest.mark.anyio
async def test_model_when_body_cut_then_connection_error_and_body_closed() -> None:
    body = Body([sse(chat_chunk("a"))], error=httpx2.RemoteProtocolError("peer closed"))
    model = FastOpenAIModel(client_for(streaming(body)), "m", "chat_completions")
    with pytest.raises(openai.APIConnectionError):
        await collect(model)
    assert body.closed


@pytest.mark.anyio
async def test_model_when_body_ends_before_last_event_then_connection_error() -> None:
    body = Body([sse(chat_chunk("a"))])
    model = FastOpenAIModel(client_for(streaming(body)), "m", "chat_completions")
    with pytest.raises(openai.APIConnectionError, match="before its last event"):
        await collect(model)


@pytest.mark.anyio
async def test_model_when_consumer_stops_early_then_body_closed() -> None:
    body = Body([sse(chat_chunk("a")), sse(chat_chunk("b"))])
    model = FastOpenAIModel(client_for(streaming(body)), "m", "chat_completions")
    events = model.stream_response(None, "hi", ModelSettings())
    async for event in events:  # type: ignore[attr-defined]
        if event.type == "response.output_text.delta":
            break
    await events.aclose()  # type: ignore[attr-defined]
    assert body.closed


@pytest.mark.anyio
async def test_model_when_tools_given_then_user_error() -> None:
    model = FastOpenAIModel(client_for(streaming(Body([]))), "m", "responses")
    with pytest.raises(UserError):
        async for _ in model.stream_response(None, "hi", ModelSettings(), tools=[object()]):
            pass
