"""A worker dies (kill -9) mid-run: readers on another worker learn it within the lease.

Two real service processes share one real redis-server. Worker A runs the stream; a reader
follows it on worker B; A is killed without a chance to say goodbye. B's reader must get one
terminal ``error`` ``upstream_unavailable`` (retryable) within ``CHAT_STREAM_LEASE_S``, and a
later reader sees the same log, ending in that same single event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.redis_server import RedisServer, start_redis
from tests.support.service import Service
from tests.support.sse import Frame, parse_lines

pytestmark = pytest.mark.redis

LEASE_S = 1.5
# Scheduling slack on a loaded 2-core machine: process exit, an XREAD round trip, the read.
SLACK_S = 0.75
TOKENS = 2000  # 20 ms apart: the run would last 40 s


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with start_redis() as server:
        yield server


def worker(redis_server: RedisServer) -> Service:
    return Service(
        {
            "CHAT_BACKEND": "fake",
            "CHAT_FAKE_TOKENS": str(TOKENS),
            "CHAT_FAKE_DELAY_MS": "20",
            "CHAT_STREAM_LEASE_S": str(LEASE_S),
            "REDIS_URL": redis_server.url,
        }
    )


def follow(url: str, started: threading.Event, ended: list[float]) -> list[Frame]:
    """Every event of a GET until the server ends it; notes when the terminal event came."""
    events: list[Frame] = []
    with httpx.stream("GET", url, timeout=LEASE_S + 10) as response:
        assert response.status_code == 200, response.read()
        for frame in parse_lines(response.iter_lines()):
            if frame.event is None:
                continue
            events.append(frame)
            if len(events) >= 3:
                started.set()
            if frame.event in {"done", "error"}:
                ended.append(time.monotonic())
    return events


def test_reader_when_worker_killed_then_upstream_unavailable_within_lease(
    redis_server: RedisServer,
) -> None:
    with worker(redis_server) as a, worker(redis_server) as b:
        created = httpx.post(
            a.base_url + "/chat/streams",
            content=b'{"message":"hi"}',
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        path = created.json()["events_url"]
        started = threading.Event()
        ended: list[float] = []
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(follow, b.base_url + path, started, ended)
            assert started.wait(10), "the reader on B got no events"
            a.proc.kill()  # SIGKILL: no shutdown, no farewell event, no lease release
            a.proc.wait(10)
            killed_at = time.monotonic()
            events = reading.result(LEASE_S + 15)
        assert ended, "the stream ended without a terminal event"
        took = ended[0] - killed_at
        terminal = events[-1]
        assert terminal.event == "error", [e.event for e in events[-3:]]
        assert terminal.data["code"] == "upstream_unavailable"
        assert terminal.data["retryable"] is True
        assert [e.event for e in events].count("error") == 1
        assert "done" not in [e.event for e in events]
        ids = [int(e.id) for e in events if e.id is not None]
        assert ids == list(range(1, len(events) + 1))
        assert took <= LEASE_S + SLACK_S, f"the terminal event came {took:.2f}s after the kill"
        # Another reader, later, replays the same log with the same single terminal event.
        with httpx.stream("GET", b.base_url + path, timeout=10) as replay:
            frames = [f for f in parse_lines(replay.iter_lines()) if f.event is not None]
        assert [(f.id, f.event) for f in frames] == [(e.id, e.event) for e in events]
        errors = [r for r in b.records() if r.get("level") in {"error", "critical"}]
        assert not errors, errors
