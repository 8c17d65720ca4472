"""POST /chat over real sockets: the SSE stream, JSON mode, and what a client sees in headers."""

from __future__ import annotations

import httpx
import pytest

from chat.models.fake import fake_tokens
from tests.support.service import Service
from tests.support.sse import answer_text, events_only, read_frames

JSON = {"Content-Type": "application/json"}


def test_stream_when_fake_backend_then_deltas_then_one_done(fake_service: Service) -> None:
    with (
        httpx.Client(base_url=fake_service.base_url, timeout=10) as client,
        client.stream("POST", "/chat", json={"message": "hi"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert len(response.headers["x-request-id"]) >= 16
        # sse-starlette's Connection: keep-alive is forbidden in HTTP/2; it must not leak.
        assert "connection" not in response.headers
        frames = events_only(read_frames(response))
    assert [f.id for f in frames] == [str(i) for i in range(1, 18)]
    assert [f.event for f in frames] == ["delta"] * 16 + ["done"]
    assert answer_text(frames) == "".join(fake_tokens(16))
    done = frames[-1].data
    assert done["type"] == "done"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["output_tokens"] == 16
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + 16
    assert done["request_id"] == response.headers["x-request-id"]
    for frame in frames:
        assert frame.data["type"] == frame.event
        assert len(frame.data_lines) == 1


@pytest.mark.parametrize("accept", [None, "text/event-stream", "*/*"])
def test_accept_when_stream_or_any_then_event_stream(
    fake_service: Service, accept: str | None
) -> None:
    headers = {} if accept is None else {"Accept": accept}
    response = httpx.post(
        fake_service.base_url + "/chat", json={"message": "hi"}, headers=headers, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")


def test_json_mode_when_accept_json_then_same_text_as_stream(fake_service: Service) -> None:
    url = fake_service.base_url + "/chat"
    reply = httpx.post(url, json={"message": "hi"}, headers={"Accept": "application/json"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"text", "finish_reason", "usage", "request_id"}
    assert body["request_id"] == reply.headers["x-request-id"]
    with httpx.stream("POST", url, json={"message": "hi"}, timeout=10) as response:
        streamed = answer_text(read_frames(response))
    assert body["text"] == streamed
    assert body["finish_reason"] == "stop"
    assert body["usage"]["output_tokens"] == 16


def test_request_id_when_client_sends_valid_one_then_kept_everywhere(fake_service: Service) -> None:
    rid = "client-req.42:abc_DEF"
    with httpx.stream(
        "POST",
        fake_service.base_url + "/chat",
        json={"message": "hi"},
        headers={"X-Request-ID": rid},
        timeout=10,
    ) as response:
        frames = events_only(read_frames(response))
    assert response.headers["x-request-id"] == rid
    assert frames[-1].data["request_id"] == rid
    access = fake_service.wait_for_log(event="request", request_id=rid)
    assert access["method"] == "POST" and access["path"] == "/chat" and access["status"] == 200
    assert access["outcome"] == "done"
    assert access["deltas"] == 16
    assert access["output_chars"] == len("".join(fake_tokens(16)))
    assert access["ttft_ms"] is not None and access["duration_ms"] >= 0


@pytest.mark.parametrize("bad", ["", "x" * 129, "has space", "semi;colon", "caf\u00e9"])
def test_request_id_when_invalid_then_replaced(fake_service: Service, bad: str) -> None:
    response = httpx.get(
        fake_service.base_url + "/healthz", headers={"X-Request-ID": bad.encode("utf-8")}
    )
    new = response.headers["x-request-id"]
    assert new != bad and 1 <= len(new) <= 128


def test_healthz_and_readyz_when_serving_then_ok(fake_service: Service) -> None:
    health = httpx.get(fake_service.base_url + "/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert "x-request-id" in health.headers
    ready = httpx.get(fake_service.base_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
