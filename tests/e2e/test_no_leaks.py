"""A client that goes away mid-stream leaves nothing behind on the server: tasks, slots, runs."""

from __future__ import annotations

import time

import httpx

from app import create_app
from chat.settings import load_settings
from tests.support.inprocess import ThreadedServer


def wait_until(predicate, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):  # bounded in count and time
        if predicate():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return bool(predicate())


def test_disconnects_when_repeated_then_no_task_or_slot_left_behind() -> None:
    settings = load_settings(
        {"CHAT_BACKEND": "fake", "CHAT_FAKE_DELAY_MS": "20", "CHAT_DETACHED_GRACE_S": "0"}
    )
    with ThreadedServer(create_app(settings)) as server:
        # A first full stream starts what lives as long as the loop (sse-starlette's watcher).
        with httpx.stream("POST", server.base_url + "/chat", json={"message": "warm"}) as first:
            assert first.read().endswith(b"\n\n")
        baseline = server.task_count()
        for _ in range(5):
            with (
                httpx.Client(base_url=server.base_url, timeout=10) as client,
                client.stream("POST", "/chat", json={"message": "hi"}) as response,
            ):
                assert next(response.iter_lines()) == "event: delta"
        assert wait_until(lambda: server.task_count() <= baseline), server.task_count()
        ready = httpx.get(server.base_url + "/readyz").json()
        assert ready["open_streams"] == 0
