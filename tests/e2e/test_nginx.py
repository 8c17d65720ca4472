"""deploy/nginx.conf, run by Debian's nginx in front of ``python -m chat --workers 2`` and Redis.

Everything is read through the proxy, as a client behind it would: streams arrive event by
event, an EventSource-style reader that drops resumes on the other worker with every event once,
request ids pass both ways, and SIGTERM to the service ends open streams with ``shutting_down``.
Which worker served a request comes from the ``pid`` field of the service's access log line.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.models.fake import fake_tokens
from tests.support.nginx import Nginx, start_nginx
from tests.support.redis_server import RedisServer, start_redis
from tests.support.service import Service, parse_log_line
from tests.support.sse import Frame, answer_text, events_only, parse_lines

pytestmark = [pytest.mark.nginx, pytest.mark.redis]

# 50 tokens 100 ms apart: a stream lasts about 5 s, long enough to drop and resume it many times.
TOKENS = 50
DELAY_MS = 100
EXPECTED = "".join(fake_tokens(TOKENS))
WORKERS = 2
RESUME_ATTEMPTS = 40
HEX_ID = 32


def service_env(redis: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": str(TOKENS),
        "CHAT_FAKE_DELAY_MS": str(DELAY_MS),
        "REDIS_URL": redis.url,
        **extra,
    }


def start_workers(env: dict[str, str]) -> Service:
    """``python -m chat --workers 2``; returns once both workers have logged ``ready``."""
    service = Service(env, wait_ready=False, main_args=["--workers", str(WORKERS)])
    ready: set[int] = set()

    def both_ready(line: str) -> bool:
        record = parse_log_line(line)
        if record is not None and record.get("event") == "ready":
            ready.add(int(record["pid"]))
        return len(ready) == WORKERS

    service.wait_for_line(both_ready, timeout=60)
    assert service.proc.pid not in ready, "the supervisor itself must not serve"
    return service


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with start_redis() as server:
        yield server


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[Service]:
    service = start_workers(service_env(redis_server))
    try:
        yield service
    finally:
        assert service.terminate() == 0
        errors = [r for r in service.records() if r.get("level") in {"error", "critical"}]
        assert not errors, errors


@pytest.fixture(scope="module")
def proxy(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with start_nginx(tmp_path_factory.mktemp("nginx"), f"127.0.0.1:{service.port}") as nginx:
        yield nginx


def new_id(label: str) -> str:
    return f"{label}-{secrets.token_hex(4)}"


def worker_of(service: Service, request_id: str) -> int:
    """The pid of the worker that served the request (its access line, once it ended)."""
    record = service.wait_for_log(timeout=15, event="request", request_id=request_id)
    return int(record["pid"])


def ids(events: list[Frame]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


def create_stream(proxy: Nginx, request_id: str) -> str:
    response = httpx.post(
        proxy.base_url + "/chat/streams",
        json={"message": "hi"},
        headers={"X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["events_url"])


def read_segment(
    proxy: Nginx, url: str, request_id: str, after: int, limit: int | None
) -> tuple[int, list[Frame]]:
    """One EventSource connection: GET with Last-Event-ID, hang up after ``limit`` events."""
    headers = {"X-Request-ID": request_id}
    if after:
        headers["Last-Event-ID"] = str(after)
    events: list[Frame] = []
    with httpx.stream("GET", proxy.base_url + url, headers=headers, timeout=20) as response:
        if response.status_code == 204:
            return 204, events
        assert response.status_code == 200, response.read()
        assert response.headers["x-request-id"] == request_id
        for frame in parse_lines(response.iter_lines()):
            if frame.event is None:
                continue  # retry: and pings
            events.append(frame)
            if limit is not None and len(events) >= limit:
                break
    return 200, events


def test_chat_through_nginx_when_streaming_then_first_delta_arrives_while_stream_is_open(
    service: Service, proxy: Nginx
) -> None:
    request_id = new_id("unbuffered")
    started = time.monotonic()
    with httpx.stream(
        "POST",
        proxy.base_url + "/chat",
        json={"message": "hi"},
        headers={"X-Request-ID": request_id},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["x-request-id"] == request_id
        lines = response.iter_lines()
        frames = parse_lines(lines)
        first = next(f for f in frames if f.event is not None)
        first_at = time.monotonic()
        # The service has not finished this request yet: its access line comes at the end.
        open_on_server = not any(
            r.get("event") == "request" and r.get("request_id") == request_id
            for r in service.records()
        )
        rest = events_only(list(frames))
        done_at = time.monotonic()
    events = [first, *rest]
    assert first.event == "delta"
    assert open_on_server, "the first delta came only after the server had finished the stream"
    assert first_at - started < (TOKENS * DELAY_MS / 1000) / 4
    # The rest trickled in at the model's pace, not in one burst at the end.
    assert done_at - first_at > (TOKENS - 2) * DELAY_MS / 1000 * 0.8
    assert ids(events) == list(range(1, TOKENS + 2))
    assert events[-1].event == "done"
    assert events[-1].data["request_id"] == request_id
    assert answer_text(events) == EXPECTED


def test_eventsource_reader_when_it_drops_then_resumes_on_the_other_worker_exactly_once(
    service: Service, proxy: Nginx
) -> None:
    create_id = new_id("create")
    url = create_stream(proxy, create_id)
    owner = worker_of(service, create_id)
    events: list[Frame] = []
    served_by: list[int] = []
    finished = False
    for attempt in range(RESUME_ATTEMPTS):
        crossed = any(pid != owner for pid in served_by)
        request_id = new_id(f"resume{attempt}")
        after = ids(events)[-1] if events else 0
        # Hang up after one event until a reconnect has landed on the other worker; then read on.
        status, segment = read_segment(proxy, url, request_id, after, None if crossed else 1)
        served_by.append(worker_of(service, request_id))
        events += segment
        if status == 204 or (events and events[-1].event in {"done", "error"}):
            finished = True
            break
    assert finished, f"not finished after {RESUME_ATTEMPTS} reconnects: {served_by}"
    assert len(served_by) >= 2, "the reader never dropped"
    assert set(served_by) - {owner}, f"every reconnect landed on the run's worker {owner}"
    # Exactly once, in order, one terminal event; the same as one uninterrupted read.
    assert ids(events) == list(range(1, TOKENS + 2))
    assert events[-1].event == "done"
    status, whole = read_segment(proxy, url, new_id("replay"), 0, None)
    assert status == 200
    assert [e.data_lines for e in events] == [e.data_lines for e in whole]
    assert answer_text(events) == answer_text(whole) == EXPECTED


def test_request_id_when_sent_kept_or_replaced_then_same_id_in_response_logs_and_events(
    service: Service, proxy: Nginx
) -> None:
    cases: list[tuple[dict[str, str], str | None]] = [
        ({"X-Request-ID": "client.id:42-ok"}, "client.id:42-ok"),
        ({}, None),  # nginx makes one ($request_id)
        ({"X-Request-ID": "not valid!"}, None),  # nginx replaces it, as the service would
    ]
    for headers, expected in cases:
        # POST /chat/streams answers at once, with the request id in its body too.
        response = httpx.post(
            proxy.base_url + "/chat/streams", json={"message": "hi"}, headers=headers, timeout=10
        )
        assert response.status_code == 201, response.text
        echoed = response.headers["x-request-id"]
        if expected is not None:
            assert echoed == expected
        else:
            assert len(echoed) == HEX_ID
            assert all(c in "0123456789abcdef" for c in echoed)
        assert response.json()["request_id"] == echoed
        worker_of(service, echoed)  # the service logged the request under the same id
        assert any(f"request_id={echoed}" in line for line in proxy.access_lines())
        events_url = response.json()["events_url"]
        assert httpx.delete(proxy.base_url + events_url, timeout=10).status_code == 204


def test_routes_through_nginx_when_requested_then_served_by_the_service_or_kept_internal(
    service: Service, proxy: Nginx
) -> None:
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["status"] == "ready"
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for path in ("/openapi.json", "/conversations/c1", "/no/such/path"):
            request_id = new_id("route")
            reply = client.get(path, headers={"X-Request-ID": request_id})
            # Whatever the service answers, it was the service: it logged the request.
            assert reply.headers["x-request-id"] == request_id
            assert "json" in reply.headers["content-type"]
            assert worker_of(service, request_id)
        request_id = new_id("metrics")
        reply = client.get("/metrics", headers={"X-Request-ID": request_id})
        assert worker_of(service, request_id), "127.0.0.1 may scrape /metrics"
        too_large = client.post(
            "/chat",
            content=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "application/json", "X-Request-ID": "big-1"},
        )
        assert too_large.status_code == 413
        assert too_large.json()["error"] == {
            "code": "payload_too_large",
            "message": "The request body is too large.",
            "request_id": "big-1",
        }
    # From any other address /metrics is a 404, and the request never reaches the service.
    outside = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=proxy.base_url, timeout=10, transport=outside) as client:
        reply = client.get("/metrics", headers={"X-Request-ID": "scraper-outside"})
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"
        assert reply.headers["x-request-id"] == "scraper-outside"
        assert client.get("/healthz").status_code == 200
    assert not any(r.get("request_id") == "scraper-outside" for r in service.records())


def test_sigterm_to_the_service_when_streams_open_then_shutting_down_through_nginx(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    service = start_workers(service_env(redis_server, CHAT_SHUTDOWN_GRACE_S="0.5"))
    try:
        with (
            start_nginx(tmp_path / "nginx", f"127.0.0.1:{service.port}") as proxy,
            httpx.Client(base_url=proxy.base_url, timeout=30) as client,
        ):
            url = create_stream(proxy, new_id("create"))
            with (
                client.stream("POST", "/chat", json={"message": "hi"}) as posted,
                client.stream("GET", url) as followed,
            ):
                open_streams: list[tuple[httpx.Response, Iterator[Frame], list[Frame]]] = []
                for response in (posted, followed):
                    assert response.status_code == 200
                    frames = parse_lines(response.iter_lines())
                    first = next(f for f in frames if f.event is not None)
                    assert first.event == "delta"
                    open_streams.append((response, frames, [first]))
                service.proc.send_signal(signal.SIGTERM)
                for _response, frames, events in open_streams:
                    events += events_only(list(frames))
        code = service.proc.wait(20)
    finally:
        service.terminate()
    assert code == 0
    for _response, _frames, events in open_streams:
        assert len(events) < TOKENS, "the stream finished before SIGTERM reached it"
        assert ids(events) == list(range(1, len(events) + 1))
        last: dict[str, Any] = events[-1].data
        assert events[-1].event == "error"
        assert last["code"] == "shutting_down"
        assert last["retryable"] is True
    draining = {r["pid"] for r in service.records() if r.get("event") == "draining"}
    assert len(draining) == WORKERS, "every worker drained"
