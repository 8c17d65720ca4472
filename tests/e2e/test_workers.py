"""``python -m chat --workers N``: N processes on one port; more than one only with REDIS_URL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.support.redis_server import RedisServer, start_redis
from tests.support.service import Service, parse_log_line

ATTEMPTS = 60


@pytest.mark.parametrize(
    ("env", "args"),
    [({}, ["--workers", "2"]), ({"CHAT_WORKERS": "2"}, [])],
    ids=["flag", "variable"],
)
def test_several_workers_when_no_redis_url_then_exit_2_with_one_line(
    env: dict[str, str], args: list[str]
) -> None:
    service = Service({"CHAT_BACKEND": "fake", **env}, wait_ready=False, main_args=args)
    try:
        code = service.proc.wait(30)
    finally:
        service.terminate()
    lines = [line for line in service.lines if line.strip()]
    assert code == 2
    assert lines == [
        "configuration error: CHAT_WORKERS: 2 workers need REDIS_URL (streams and conversations "
        "must be shared between workers); set REDIS_URL or run 1 worker"
    ]


def test_workers_flag_when_not_a_number_then_exit_2_naming_the_variable() -> None:
    service = Service({"CHAT_BACKEND": "fake"}, wait_ready=False, main_args=["--workers", "0"])
    try:
        code = service.proc.wait(30)
    finally:
        service.terminate()
    assert code == 2
    assert [line for line in service.lines if line.strip()] == [
        "configuration error: CHAT_WORKERS: expected an integer between 1 and 256"
    ]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with start_redis() as server:
        yield server


@pytest.mark.redis
def test_two_workers_when_redis_url_set_then_both_processes_serve(
    redis_server: RedisServer,
) -> None:
    env = {"CHAT_BACKEND": "fake", "CHAT_FAKE_TOKENS": "4", "REDIS_URL": redis_server.url}
    service = Service(env, wait_ready=False, main_args=["--workers", "2"])
    try:
        ready: set[int] = set()

        def both_ready(line: str) -> bool:
            record = parse_log_line(line)
            if record is not None and record.get("event") == "ready":
                ready.add(int(record["pid"]))
            return len(ready) == 2

        service.wait_for_line(both_ready, timeout=60)
        served: set[int] = set()
        for _ in range(ATTEMPTS):  # bounded: each new connection goes to whichever accepts
            request_id = secrets.token_hex(8)
            # A new client, so a new connection each time: the kernel picks the worker.
            reply = httpx.post(
                service.base_url + "/chat",
                json={"message": "hi"},
                headers={"Accept": "application/json", "X-Request-ID": request_id},
                timeout=10,
            )
            assert reply.status_code == 200
            served.add(service.wait_for_log(event="request", request_id=request_id)["pid"])
            if served == ready:
                break
        assert served == ready, f"only {served} of {ready} served in {ATTEMPTS} requests"
        assert service.proc.pid not in ready
    finally:
        assert service.terminate() == 0
