"""Two service processes share one redis-server: a reader resumes, or cancels, on the other one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from chat.models.fake import fake_tokens
from tests.support.redis_server import RedisServer, start_redis
from tests.support.service import Service
from tests.support.sse import Frame, answer_text, parse_lines

pytestmark = pytest.mark.redis

# 120 tokens 20 ms apart: a run lasts about 2.4 s, long enough to move or cancel it mid-way.
TOKENS = 120
EXPECTED = "".join(fake_tokens(TOKENS))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for this module's workers, stopped at the end of the session."""
    with start_redis() as server:
        yield server


@pytest.fixture(scope="module")
def workers(redis_server: RedisServer) -> Iterator[tuple[Service, Service]]:
    """Workers A and B: separate processes, one Redis."""
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": str(TOKENS),
        "CHAT_FAKE_DELAY_MS": "20",
        "REDIS_URL": redis_server.url,
    }
    with Service(env) as a, Service(env) as b:
        yield a, b
        for worker in (a, b):
            errors = [r for r in worker.records() if r.get("level") in {"error", "critical"}]
            assert not errors, errors
            connected = worker.wait_for_log(event="stream_store_connected")
            assert connected["url"] == redis_server.url


def create(service: Service) -> str:
    response = httpx.post(
        service.base_url + "/chat/streams",
        content=b'{"message":"hi"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["events_url"] == f"/chat/streams/{body['stream_id']}"
    return str(body["events_url"])


def read(service: Service, url: str, after: int = 0, limit: int | None = None) -> list[Frame]:
    """Events of a GET (after ``after``); hang up after ``limit`` of them."""
    headers = {"Last-Event-ID": str(after)} if after else {}
    events: list[Frame] = []
    with httpx.stream("GET", service.base_url + url, headers=headers, timeout=20) as response:
        assert response.status_code == 200, response.read()
        for frame in parse_lines(response.iter_lines()):
            if frame.event is None:
                continue  # the retry field and pings
            events.append(frame)
            if limit is not None and len(events) >= limit:
                break
    return events


def ids(events: list[Frame]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


def test_reader_when_it_moves_to_another_worker_then_resumes_without_gap_or_duplicate(
    workers: tuple[Service, Service],
) -> None:
    a, b = workers
    url = create(a)
    first = read(a, url, limit=TOKENS // 2)
    assert [e.event for e in first] == ["delta"] * (TOKENS // 2)
    rest = read(b, url, after=ids(first)[-1])
    whole = first + rest
    assert ids(whole) == list(range(1, TOKENS + 2))
    assert whole[-1].event == "done"
    uninterrupted = read(b, url)
    assert ids(uninterrupted) == ids(whole)
    assert answer_text(whole) == answer_text(uninterrupted) == EXPECTED
    assert [e.data_lines for e in whole] == [e.data_lines for e in uninterrupted]


def test_delete_when_sent_to_another_worker_then_owner_cancels_and_readers_get_error(
    workers: tuple[Service, Service],
) -> None:
    a, b = workers
    url = create(a)
    events: list[Frame] = []
    with httpx.stream("GET", a.base_url + url, timeout=20) as response:
        assert response.status_code == 200
        for frame in parse_lines(response.iter_lines()):
            if frame.event is None:
                continue
            events.append(frame)
            if len(events) == 1:
                assert httpx.delete(b.base_url + url, timeout=10).status_code == 204
    last = events[-1]
    assert last.event == "error"
    assert last.data["code"] == "cancelled"
    assert len(events) < TOKENS, "the run finished before the cancel reached it"
    assert ids(events) == list(range(1, len(events) + 1))
    # A reader on the other worker replays the same log, cancel included.
    replay = read(b, url)
    assert ids(replay) == ids(events)
    assert replay[-1].data["code"] == "cancelled"


def test_service_when_redis_unreachable_then_start_fails_without_password() -> None:
    env = {"CHAT_BACKEND": "fake", "REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}
    service = Service(env, wait_ready=False)
    try:
        code = service.proc.wait(30)
    finally:
        service.terminate()
    lines = [line for line in service.lines if line.strip()]
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: REDIS_URL: cannot reach")
    assert "hunter2" not in lines[0]
