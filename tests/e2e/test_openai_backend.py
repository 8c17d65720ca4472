"""The openai backend over real HTTP against a local fake OpenAI server, in both API formats."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from bench.fake_upstream import FakeUpstream, RequestRecord, expected_text, prompt_tokens
from tests.support.service import Service
from tests.support.sse import Frame, answer_text, events_only, read_frames

API_KEY = "sk-test-" + "k" * 24


@pytest.fixture(scope="module", params=["chat_completions", "responses"])
def service(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[Service]:
    env = {
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": API_KEY,
        "CHAT_OPENAI_API": request.param,
        "CHAT_MODEL": "fake-model",
        "CHAT_FIRST_TOKEN_TIMEOUT_S": "1",
        "CHAT_IDLE_TIMEOUT_S": "1",
        "CHAT_DETACHED_GRACE_S": "0",
    }
    with Service(env) as service:
        yield service


def chat(service: Service, message: str, **headers: str) -> tuple[httpx.Response, list[Frame]]:
    with httpx.stream(
        "POST", service.base_url + "/chat", json={"message": message}, headers=headers, timeout=20
    ) as response:
        frames = events_only(read_frames(response))
    return response, frames


def record_for(upstream: FakeUpstream, marker: str) -> RequestRecord:
    return upstream.wait_for_request(lambda r: marker in str(r.body), timeout=5)


def test_stream_when_upstream_answers_then_text_usage_and_ids(
    service: Service, upstream: FakeUpstream
) -> None:
    marker = uuid.uuid4().hex
    response, frames = chat(service, f"hello {marker}", **{"X-Request-ID": marker})
    assert response.status_code == 200
    assert answer_text(frames) == expected_text(8)
    assert [f.id for f in frames] == [str(i) for i in range(1, len(frames) + 1)]
    done = frames[-1]
    assert done.event == "done"
    record = record_for(upstream, marker)
    assert done.data["usage"] == {
        "input_tokens": prompt_tokens(record.body),
        "output_tokens": 8,
        "total_tokens": prompt_tokens(record.body) + 8,
    }
    # The correlation id travels upstream, with our key; the provider's id comes back in the log.
    assert record.headers["x-request-id"] == marker
    assert record.headers["authorization"] == f"Bearer {API_KEY}"
    assert record.body["model"] == "fake-model"
    access = service.wait_for_log(event="request", request_id=marker)
    assert access["upstream_request_id"] == record.request_id
    assert access["output_tokens"] == 8


def test_json_mode_when_upstream_answers_then_equals_stream(service: Service) -> None:
    reply = httpx.post(
        service.base_url + "/chat",
        json={"message": "[[tokens=5]] json please"},
        headers={"Accept": "application/json"},
        timeout=20,
    )
    assert reply.status_code == 200
    _, frames = chat(service, "[[tokens=5]] json please")
    assert reply.json()["text"] == answer_text(frames) == expected_text(5)


@pytest.mark.parametrize(
    ("directive", "code", "retryable"),
    [
        ("[[status=401]]", "upstream_auth", False),
        ("[[status=429]]", "upstream_rate_limited", True),
        ("[[status=503]]", "upstream_unavailable", True),
        ("[[status=500]]", "upstream_error", True),
        ("[[status=400]]", "upstream_error", True),
    ],
)
def test_upstream_status_when_streaming_then_error_event(
    service: Service, directive: str, code: str, retryable: bool
) -> None:
    response, frames = chat(service, f"{directive} {uuid.uuid4().hex}")
    assert response.status_code == 200
    assert [f.event for f in frames] == ["error"]
    error = frames[0].data
    assert (error["code"], error["retryable"]) == (code, retryable)
    assert error["request_id"] == response.headers["x-request-id"]
    assert "http" not in error["message"].lower() and "sk-" not in error["message"]


def test_upstream_status_when_json_mode_then_error_status(service: Service) -> None:
    reply = httpx.post(
        service.base_url + "/chat",
        json={"message": f"[[status=401]] {uuid.uuid4().hex}"},
        headers={"Accept": "application/json"},
        timeout=20,
    )
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_auth"


@pytest.mark.parametrize("directive", ["[[fail_after=3]]", "[[error_event_after=3]]"])
def test_upstream_failure_after_deltas_when_streaming_then_text_kept_then_error(
    service: Service, directive: str
) -> None:
    _, frames = chat(service, f"{directive} {uuid.uuid4().hex}")
    assert answer_text(frames) == expected_text(3)
    assert [f.event for f in frames][-1] == "error"
    assert sum(f.event in {"done", "error"} for f in frames) == 1
    assert frames[-1].data["code"] in {"upstream_unavailable", "upstream_error"}


def test_upstream_silent_when_first_token_deadline_passes_then_timeout_and_upstream_closed(
    service: Service, upstream: FakeUpstream
) -> None:
    marker = uuid.uuid4().hex
    _, frames = chat(service, f"[[hang]] {marker}")
    assert [f.event for f in frames] == ["error"]
    assert frames[0].data["code"] == "upstream_timeout"
    assert frames[0].data["message"] == "The model did not answer in time."
    assert upstream.wait_for_disconnect(record_for(upstream, marker), timeout=2)


def test_upstream_stalls_when_idle_deadline_passes_then_text_then_timeout(service: Service) -> None:
    _, frames = chat(service, f"[[hang_after=2]] {uuid.uuid4().hex}")
    assert answer_text(frames) == expected_text(2)
    assert frames[-1].data["code"] == "upstream_timeout"


def test_client_disconnect_mid_stream_when_reading_then_upstream_closed_within_2s(
    service: Service, upstream: FakeUpstream
) -> None:
    marker = uuid.uuid4().hex
    with httpx.stream(
        "POST",
        service.base_url + "/chat",
        json={"message": f"[[tokens=200,delay_ms=50]] {marker}"},
        headers={"X-Request-ID": marker},
        timeout=20,
    ) as response:
        deltas = 0
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                deltas += 1
                if deltas == 2:
                    break
    record = record_for(upstream, marker)
    assert upstream.wait_for_disconnect(record, timeout=2)
    assert record.tokens_sent < 200
    access = service.wait_for_log(event="request", request_id=marker)
    assert access["outcome"] == "client_disconnected"
    # Nothing is left behind: the stream slot is free again.
    assert httpx.get(service.base_url + "/readyz").json()["open_streams"] == 0
