"""Redis goes away mid-stream, then comes back: streams end cleanly, the service heals itself.

A real redis-server that the test kills (SIGKILL: no goodbye to its clients) and restarts on
the same port, empty, as a crashed cache would come back. Readers are real httpx clients in
threads; an unclean end of the chunked body would raise in ``iter_lines``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.redis_server import RedisServer, start_redis
from tests.support.service import Service
from tests.support.sse import Frame, parse_lines

pytestmark = pytest.mark.redis

# 400 tokens 20 ms apart: the run lasts about 8 s, far longer than the test needs.
TOKENS = 400
READ_TIMEOUT_S = 20.0
HEAL_S = 15.0


@dataclass
class Reading:
    """What one reader got, and how its response ended."""

    status: int = 0
    frames: list[Frame] = field(default_factory=list)
    clean_end: bool = False
    failure: str | None = None

    @property
    def events(self) -> list[Frame]:
        return [f for f in self.frames if f.event is not None]


def read_until_end(
    method: str, url: str, started: threading.Event, *, body: bytes | None = None
) -> Reading:
    """Read a stream to its end; ``started`` is set once two deltas arrived."""
    reading = Reading()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        with httpx.stream(
            method, url, content=body, headers=headers, timeout=READ_TIMEOUT_S
        ) as response:
            reading.status = response.status_code
            for frame in parse_lines(response.iter_lines()):
                reading.frames.append(frame)
                if len(reading.events) >= 2:
                    started.set()
        reading.clean_end = True
    except httpx.HTTPError as exc:
        reading.failure = f"{type(exc).__name__}: {exc}"
    finally:
        started.set()
    return reading


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with start_redis() as server:
        yield server


@pytest.fixture
def service(redis_server: RedisServer) -> Iterator[Service]:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": str(TOKENS),
        "CHAT_FAKE_DELAY_MS": "20",
        "REDIS_URL": redis_server.url,
    }
    with Service(env) as running:
        yield running


def post_chat(service: Service) -> httpx.Response:
    return httpx.post(
        service.base_url + "/chat",
        content=b'{"message":"hi"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def wait_until_ready(service: Service, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    response = httpx.get(service.base_url + "/readyz", timeout=5)
    for _ in range(int(timeout / 0.1) + 1):  # bounded in count and time
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
        response = httpx.get(service.base_url + "/readyz", timeout=5)
    return response


def wait_until_idle(service: Service, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):  # bounded in count and time
        ready = httpx.get(service.base_url + "/readyz", timeout=5)
        if ready.status_code == 200 and ready.json()["open_streams"] == 0:
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return False


def assert_ends_with_one_store_unavailable(reading: Reading, name: str) -> None:
    assert reading.status == 200, name
    assert reading.clean_end, f"{name}: the chunked body did not end cleanly: {reading.failure}"
    events = reading.events
    terminals = [e for e in events if e.event in {"done", "error"}]
    assert len(terminals) == 1, f"{name}: terminal events {[e.event for e in terminals]}"
    assert events[-1] is terminals[0], f"{name}: something came after the terminal event"
    assert terminals[0].event == "error", name
    assert terminals[0].data["code"] == "store_unavailable", name
    assert terminals[0].data["retryable"] is True, name
    ids = [int(e.id) for e in events if e.id is not None]
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"{name}: ids {ids}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_streams_when_redis_dies_then_one_store_unavailable_503s_and_service_heals(
    redis_server: RedisServer, service: Service, sig: int
) -> None:
    created = httpx.post(
        service.base_url + "/chat/streams",
        content=b'{"message":"hi"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    events_url = service.base_url + created.json()["events_url"]
    post_started, get_started = threading.Event(), threading.Event()
    with ThreadPoolExecutor(3) as pool:
        # A JSON-mode client too: its one reply comes at the end, so it is mid-run at the kill.
        json_reply = pool.submit(
            httpx.post,
            service.base_url + "/chat",
            content=b'{"message":"j"}',
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=READ_TIMEOUT_S,
        )
        posted = pool.submit(
            read_until_end,
            "POST",
            service.base_url + "/chat",
            post_started,
            body=b'{"message":"a"}',
        )
        followed = pool.submit(read_until_end, "GET", events_url, get_started)
        assert post_started.wait(READ_TIMEOUT_S) and get_started.wait(READ_TIMEOUT_S)
        killed_at = time.monotonic()
        redis_server.kill(sig)
        post_reading = posted.result(READ_TIMEOUT_S + 5)
        get_reading = followed.result(READ_TIMEOUT_S + 5)
        json_answer = json_reply.result(READ_TIMEOUT_S + 5)
    ended_after = time.monotonic() - killed_at
    assert_ends_with_one_store_unavailable(post_reading, "POST /chat")
    assert_ends_with_one_store_unavailable(get_reading, "GET /chat/streams/{id}")
    assert ended_after < 10, f"the streams took {ended_after:.1f}s to end"
    assert json_answer.status_code == 503, json_answer.text
    assert json_answer.json()["error"]["code"] == "store_unavailable"
    assert int(json_answer.headers["Retry-After"]) >= 1

    # While Redis is away: new work gets 503 store_unavailable with Retry-After, readiness 503.
    refused = post_chat(service)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert int(refused.headers["Retry-After"]) >= 1
    resumed = httpx.get(events_url, timeout=10)
    assert resumed.status_code == 503, resumed.text
    assert resumed.json()["error"]["code"] == "store_unavailable"
    ready = httpx.get(service.base_url + "/readyz", timeout=5)
    assert ready.status_code == 503, ready.text
    assert ready.json()["error"]["code"] == "store_unavailable"

    # Redis comes back, empty: no restart of the service, it serves again on its own.
    redis_server.restart()
    ready = wait_until_ready(service, HEAL_S)
    assert ready.status_code == 200, ready.text
    with httpx.stream(
        "POST",
        service.base_url + "/chat",
        content=b'{"message":"again"}',
        headers={"Content-Type": "application/json"},
        timeout=READ_TIMEOUT_S,
    ) as response:
        assert response.status_code == 200
        frames = [f for f in parse_lines(response.iter_lines()) if f.event is not None]
    assert frames[-1].event == "done"
    assert len(frames) == TOKENS + 1
    assert wait_until_idle(service, 5.0), "a stream slot was never given back"
    # No tracebacks, no errors but the access lines of the 503s (every 5xx is logged as error).
    records = service.records()
    assert not [r for r in records if "exception" in r], "a traceback was logged"
    errors = [r for r in records if r.get("level") == "error" and r.get("event") != "request"]
    assert not errors, errors
    assert any(r.get("event") == "stream_store_available" for r in records)
