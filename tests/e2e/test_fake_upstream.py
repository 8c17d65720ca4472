"""Tests of the fake OpenAI upstream itself, driven by the real openai client and agents SDK."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from tests.support.fake_upstream import (
    FakeUpstream,
    RequestRecord,
    Scenario,
    expected_text,
    last_user_text,
    parse_directives,
    prompt_tokens,
)

ROOT = Path(__file__).resolve().parents[2]
TOKENS = 8

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(tokens=TOKENS) as server:
        yield server


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    # Strict validation makes the client check every field against the openai types.
    async with AsyncOpenAI(
        base_url=fake.base_url,
        api_key="sk-test",
        max_retries=0,
        timeout=10,
        _strict_response_validation=True,
    ) as c:
        yield c


def chat_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


async def chat_stream_text(client: AsyncOpenAI, text: str, **kwargs: Any) -> str:
    stream = await client.chat.completions.create(
        model="m", messages=chat_messages(text), stream=True, **kwargs
    )
    out = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            out += chunk.choices[0].delta.content
    return out


# --------------------------------------------------------------------------- pure helpers


def test_pure_helpers() -> None:
    assert expected_text(3) == "tok0 tok1 tok2 "
    assert expected_text(0) == ""
    body = {"messages": chat_messages("hello big [[tokens=2]] world")}
    assert prompt_tokens(body) == 2 + 4 + 1
    assert prompt_tokens({"instructions": "x", "input": "hi"}) == 3
    assert last_user_text({"input": [{"role": "user", "content": [{"text": "a"}]}]}) == "a"
    assert parse_directives("a [[tokens=5, hang]] b [[delay_ms=1.5]]") == {
        "tokens": "5",
        "hang": "",
        "delay_ms": "1.5",
    }
    scenario = Scenario().with_directives({"fail_after": "30", "hang_after": "2", "tokens": "9"})
    assert scenario.cutoff(scenario.tokens) == (2, "hang")
    assert Scenario().with_directives({"fail_after": "30"}).cutoff(5) == (5, "fail")
    with pytest.raises(ValueError, match="unknown"):
        Scenario().with_directives({"nope": "1"})


# --------------------------------------------------------------------------- openai client


async def test_chat_stream_text_usage_and_record(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-x",
        messages=chat_messages("hi there"),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": "svc-123"},
    )
    assert stream.response.headers["x-request-id"] == "req_fake_1"
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_text(
        TOKENS
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 8, 13)
    assert {c.model for c in chunks} == {"gpt-x"}

    record = fake.wait_for_request()
    assert fake.wait_for_finish(record)
    assert (record.method, record.path, record.status) == ("POST", "/v1/chat/completions", 200)
    assert record.headers["authorization"] == "Bearer sk-test"
    assert record.headers["x-request-id"] == "svc-123"
    assert record.body["stream"] is True
    assert record.stream
    assert record.tokens_sent == TOKENS
    assert not record.disconnected
    assert record.finished_at is not None
    assert record.finished_at >= record.started_at


async def test_chat_stream_without_usage_and_length_limit(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=chat_messages("[[tokens=20]]"), stream=True, max_tokens=4
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_text(4)


async def test_responses_stream_events(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="m", instructions="be brief", input="hi [[tokens=3]]", stream=True
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == expected_text(3)
    assert done.response.usage is not None
    assert done.response.usage.input_tokens == 2 + 2 + 1
    assert done.response.usage.output_tokens == 3
    assert done.response.usage.total_tokens == 8
    item_ids = {getattr(e, "item_id", None) for e in events} - {None}
    assert item_ids == {done.response.output[0].id}
    assert fake.wait_for_request().directives == {"tokens": "3"}


async def test_non_streaming_both_formats(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="m", messages=chat_messages("hi"))
    assert completion.choices[0].message.content == expected_text(TOKENS)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    response = await client.responses.create(model="m", input="hi", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.output_text == expected_text(2)
    models = await client.models.list()
    assert "fake-model" in [m.id for m in models.data]


# --------------------------------------------------------------------------- agents SDK


@pytest.mark.parametrize("model_cls", [OpenAIChatCompletionsModel, OpenAIResponsesModel])
async def test_agents_sdk_stream(client: AsyncOpenAI, model_cls: type[Any]) -> None:
    agent = Agent(name="a", instructions="x", model=model_cls(model="m", openai_client=client))
    result = Runner.run_streamed(
        agent,
        input="hi",
        run_config=RunConfig(
            tracing_disabled=True, model_settings=ModelSettings(include_usage=True)
        ),
    )
    deltas = [
        event.data.delta
        async for event in result.stream_events()
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
    ]
    assert deltas == [f"tok{i} " for i in range(TOKENS)]
    assert result.final_output == expected_text(TOKENS)
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 3, TOKENS)


# --------------------------------------------------------------------------- directives


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_status_directive(
    client: AsyncOpenAI, status: int, exc_type: type[openai.APIStatusError]
) -> None:
    with pytest.raises(exc_type) as info:
        await chat_stream_text(client, f"hi [[status={status}]]")
    assert info.value.status_code == status
    assert info.value.request_id is not None
    assert info.value.request_id.startswith("req_fake_")
    assert isinstance(info.value.body, dict)
    assert "message" in info.value.body
    if status == 429:
        assert info.value.response.headers["retry-after"] == "0"
    with pytest.raises(exc_type):
        await client.responses.create(model="m", input=f"[[status={status}]]", stream=True)


async def test_times_lets_a_retry_succeed(fake: FakeUpstream) -> None:
    # retry-after-ms keeps the client's back-off short; retry-after: 0 alone means "use default".
    async with AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=2) as c:
        text = await chat_stream_text(c, "[[status=503 times=1 retry_after_ms=1]] unique-1")
    assert text == expected_text(TOKENS)
    assert [r.status for r in fake.requests] == [503, 200]


async def test_echo_key(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        await chat_stream_text(client, "[[echo_key]]")
    assert "Bearer sk-test" in str(info.value)


@pytest.mark.parametrize("kind", ["chat", "responses"])
async def test_fail_after(fake: FakeUpstream, client: AsyncOpenAI, kind: str) -> None:
    got: list[str] = []

    async def consume() -> None:
        if kind == "chat":
            stream = await client.chat.completions.create(
                model="m", messages=chat_messages("[[fail_after=3]]"), stream=True
            )
            async for chunk in stream:
                got.extend(c.delta.content for c in chunk.choices if c.delta.content)
        else:
            rstream = await client.responses.create(
                model="m", input="[[fail_after=3]]", stream=True
            )
            async for event in rstream:
                if event.type == "response.output_text.delta":
                    got.append(event.delta)

    with pytest.raises(openai.APIConnectionError):
        await consume()
    assert got == ["tok0 ", "tok1 ", "tok2 "]
    record = fake.wait_for_request()
    assert fake.wait_for_finish(record)
    assert record.tokens_sent == 3
    assert not record.disconnected


async def test_error_event_after_chat(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIError, match="after 2 tokens") as info:
        await chat_stream_text(client, "[[error_event_after=2]]")
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "server_error"


@pytest.mark.parametrize(
    ("directive", "terminal"), [("error_event_after", "error"), ("failed_after", "response.failed")]
)
async def test_in_band_errors_responses(client: AsyncOpenAI, directive: str, terminal: str) -> None:
    stream = await client.responses.create(model="m", input=f"[[{directive}=2]]", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events][-3:] == [
        "response.output_text.delta",
        "response.output_text.delta",
        terminal,
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_agents_sdk_surfaces_response_failed(client: AsyncOpenAI) -> None:
    agent = Agent(
        name="a", instructions="x", model=OpenAIResponsesModel(model="m", openai_client=client)
    )
    result = Runner.run_streamed(
        agent, input="[[failed_after=1]]", run_config=RunConfig(tracing_disabled=True)
    )
    with pytest.raises(Exception, match="after 1 tokens"):
        async for _ in result.stream_events():
            pass


@pytest.mark.parametrize(
    ("directive", "exc_type"),
    [
        ("fail_after=2", openai.APIConnectionError),
        ("error_event_after=2", openai.InternalServerError),
        ("hang_after=2", openai.APITimeoutError),
    ],
)
async def test_failures_without_stream(
    fake: FakeUpstream, directive: str, exc_type: type[openai.APIError]
) -> None:
    async with AsyncOpenAI(
        base_url=fake.base_url, api_key="sk-test", max_retries=0, timeout=0.3
    ) as c:
        with pytest.raises(exc_type):
            await c.chat.completions.create(model="m", messages=chat_messages(f"[[{directive}]]"))
    record = fake.wait_for_request()
    assert fake.wait_for_finish(record, timeout=2)
    assert record.disconnected == directive.startswith("hang")


async def test_async_context_manager() -> None:
    async with (
        FakeUpstream(tokens=2) as fake,
        AsyncOpenAI(base_url=fake.base_url, api_key="sk-test") as c,
    ):
        assert await chat_stream_text(c, "hi") == expected_text(2)
        record = await fake.await_request()
    assert record.status == 200


async def test_delay_ms_spaces_tokens(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    started = time.monotonic()
    assert await chat_stream_text(client, "[[tokens=3 delay_ms=30]]") == expected_text(3)
    assert time.monotonic() - started >= 0.09
    record = fake.wait_for_request()
    assert fake.wait_for_finish(record)
    assert record.tokens_sent == 3


async def test_hang_records_client_disconnect(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    task = asyncio.create_task(chat_stream_text(client, "[[hang]]"))
    record = await fake.await_request()
    assert not record.finished
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.monotonic()
    assert await fake.await_disconnect(record, timeout=2)
    assert time.monotonic() - started < 1
    assert record.tokens_sent == 0
    assert record.status is None


async def test_drop_closes_without_response(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await chat_stream_text(client, "[[drop]]")
    record = await fake.await_request()
    assert await fake.await_disconnect(record, timeout=2)
    assert record.status is None


async def test_hang_after_then_client_closes(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=chat_messages("[[hang_after=2]]"), stream=True
    )
    got = []
    async for chunk in stream:
        got.extend(c.delta.content for c in chunk.choices if c.delta.content)
        if len(got) == 2:
            break
    await stream.close()
    record = fake.wait_for_request()
    assert await fake.await_disconnect(record, timeout=2)
    assert record.tokens_sent == 2


async def test_bad_directive_and_unknown_path(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown fake-upstream directive"):
        await chat_stream_text(client, "[[tokenz=3]]")
    async with httpx.AsyncClient(base_url=fake.origin) as http_client:
        response = await http_client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"
    assert response.headers["x-request-id"].startswith("req_fake_")


async def test_keep_alive_reuses_connection(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    await chat_stream_text(client, "one")
    await chat_stream_text(client, "two [[delay_ms=1]]")
    await client.responses.create(model="m", input="three")
    records: list[RequestRecord] = fake.requests
    assert len(records) == 3
    assert len({r.conn_id for r in records}) == 1
    fake.reset()
    assert fake.requests == []


def test_server_wide_defaults() -> None:
    with FakeUpstream(tokens=2, directives="status=503") as fake:
        response = httpx.post(f"{fake.base_url}/chat/completions", json={"messages": []})
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "server_error"


def stream_body(fake: FakeUpstream, path: str, text: str) -> httpx.Response:
    body: dict[str, Any] = {"stream": True}
    if path == "/chat/completions":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["input"] = text
    return httpx.post(f"{fake.base_url}{path}", json=body, timeout=10)


def test_location_and_retry_after_when_given_with_status_then_sent_as_headers() -> None:
    with FakeUpstream(tokens=2) as fake:
        moved = stream_body(fake, "/chat/completions", "[[status=308,location=http://x.test/v1]]")
        limited = stream_body(fake, "/chat/completions", "[[status=429,retry_after=7]]")
    assert (moved.status_code, moved.headers["location"]) == (308, "http://x.test/v1")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")


@pytest.mark.parametrize("path", ["/chat/completions", "/responses"])
def test_bad_utf8_after_when_streamed_then_good_tokens_then_bytes_not_utf8(path: str) -> None:
    with FakeUpstream(tokens=5) as fake:
        response = stream_body(fake, path, "[[bad_utf8_after=2]]")
    assert response.status_code == 200
    body = response.content
    # The bad delta comes right after the two good ones (the usual end follows it).
    assert body.index(b"tok0 ") < body.index(b"tok1 ") < body.index(b"\xc0\xaf\xff")
    assert b"tok2 " not in body[: body.index(b"\xc0\xaf\xff")]
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")


@pytest.mark.parametrize("path", ["/chat/completions", "/responses"])
def test_say_when_server_wide_then_answer_is_those_pieces(path: str) -> None:
    with FakeUpstream(directives="say=eyJhb|GciOi") as fake:
        response = stream_body(fake, path, "hello")
        record = fake.wait_for_request()
    assert response.status_code == 200
    assert b'"eyJhb"' in response.content and b'"GciOi"' in response.content
    assert b"tok0" not in response.content
    assert "eyJ" not in str(record.body)  # the text came from the server, not the prompt


def test_cli_prints_address_and_stops_on_sigterm() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_upstream", "--port", "0", "--tokens", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("fake upstream listening on http://127.0.0.1:")
            base_url = line.rsplit(" ", 1)[1]
            response = httpx.post(
                f"{base_url}/chat/completions", json={"messages": [], "stream": False}, timeout=5
            )
            assert response.json()["choices"][0]["message"]["content"] == expected_text(2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
