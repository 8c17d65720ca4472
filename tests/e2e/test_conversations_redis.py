"""Conversations across workers: two service processes, one real redis-server, the fake upstream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.conversations import (
    ANSWER,
    ask,
    asked_upstream,
    history,
    new_id,
    openai_env,
    sent_messages,
    upstream_request,
)
from tests.support.redis_server import RedisServer, start_redis
from tests.support.service import Service
from tests.support.sse import events_only, read_frames

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with start_redis() as server:
        yield server


@pytest.fixture(scope="module")
def workers(upstream: FakeUpstream, redis_server: RedisServer) -> Iterator[tuple[Service, Service]]:
    """Workers A and B: separate processes (and data dirs), one Redis; locks live 1 s."""
    env = openai_env(upstream, REDIS_URL=redis_server.url, CHAT_CONVERSATION_LOCK_TTL_S="1")
    with Service(env) as a, Service(env) as b:
        yield a, b
        for worker in (a, b):
            assert worker.wait_for_log(event="conversation_store_opened")["store"] == "redis"


def test_next_turn_when_on_another_worker_then_it_gets_the_history(
    workers: tuple[Service, Service], upstream: FakeUpstream
) -> None:
    a, b = workers
    conversation_id = new_id()
    first, second = f"on a {uuid.uuid4().hex}", f"on b {uuid.uuid4().hex}"
    assert ask(a, first, conversation_id).status_code == 200
    assert ask(b, second, conversation_id).status_code == 200
    assert sent_messages(upstream_request(upstream, second)) == [
        ("user", first),
        ("assistant", ANSWER),
        ("user", second),
    ]
    assert history(a, conversation_id) == history(b, conversation_id)
    assert len(history(a, conversation_id)) == 4


def test_turn_when_running_on_another_worker_then_409_before_any_model_call(
    workers: tuple[Service, Service], upstream: FakeUpstream
) -> None:
    a, b = workers
    conversation_id = new_id()
    slow, hasty = uuid.uuid4().hex, uuid.uuid4().hex
    created = httpx.post(
        a.base_url + "/chat/streams",
        json={"message": f"[[tokens=40 delay_ms=50]] {slow}", "conversation_id": conversation_id},
        timeout=10,
    )
    assert created.status_code == 201
    busy = ask(b, hasty, conversation_id)
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "conversation_busy"
    assert busy.headers["retry-after"].isdigit()
    assert not asked_upstream(upstream, hasty)
    # Longer than the lock's lifetime: A keeps renewing it, so B stays refused.
    with httpx.stream("GET", a.base_url + created.json()["events_url"], timeout=20) as response:
        assert events_only(read_frames(response))[-1].event == "done"
    assert ask(b, hasty, conversation_id).status_code == 200


def test_delete_when_on_another_worker_then_gone_everywhere(
    workers: tuple[Service, Service],
) -> None:
    a, b = workers
    conversation_id = new_id()
    assert ask(a, "to be deleted", conversation_id).status_code == 200
    assert httpx.delete(b.base_url + f"/conversations/{conversation_id}").status_code == 204
    assert httpx.get(a.base_url + f"/conversations/{conversation_id}").status_code == 404


def test_dead_worker_when_it_held_a_conversation_then_another_continues_it(
    upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    env = openai_env(upstream, REDIS_URL=redis_server.url, CHAT_CONVERSATION_LOCK_TTL_S="1")
    conversation_id = new_id()
    with Service(env) as doomed, Service(env) as survivor:
        assert ask(doomed, "before", conversation_id).status_code == 200
        created = httpx.post(
            doomed.base_url + "/chat/streams",
            json={
                "message": "[[tokens=200 delay_ms=50]] doomed",
                "conversation_id": conversation_id,
            },
            timeout=10,
        )
        assert created.status_code == 201
        assert ask(survivor, "meanwhile", conversation_id).status_code == 409
        doomed.proc.kill()
        doomed.proc.wait(10)
        killed_at = time.monotonic()
        status = 409
        for _ in range(100):  # bounded: about 6 s
            status = ask(survivor, "after", conversation_id).status_code
            if status != 409:
                break
            time.sleep(0.05)
        assert status == 200
        assert time.monotonic() - killed_at < 5.0
        texts = [turn["text"] for turn in history(survivor, conversation_id)]
        assert texts == ["before", ANSWER, "after", ANSWER]  # the dead run saved nothing
