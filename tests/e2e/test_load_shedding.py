"""Overload is shed, not queued: with the loop's lag scripted high, new streams get 503 at once
while the admitted ones run to ``done``; when the lag falls, streams are admitted again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx

from app import create_app
from chat.service.adaptive_limit import LoopSample
from chat.settings import load_settings
from tests.support.inprocess import ThreadedServer
from tests.support.sse import events_only, parse_lines


class ScriptedLag:
    """A lag sampler for the app's lifespan that reports whatever lag the test sets."""

    def __init__(self) -> None:
        self.lag_s = 0.0
        self.limit: int | None = None
        self._changed = threading.Condition()

    async def __call__(self, on_window: Callable[[LoopSample], object]) -> None:
        while True:
            # A late loop is a busy one; one that keeps up has room (under the 80 % ceiling).
            limit = on_window(LoopSample(self.lag_s, busy=1.0 if self.lag_s else 0.5))
            with self._changed:
                self.limit = limit  # type: ignore[assignment]
                self._changed.notify_all()
            await asyncio.sleep(0.005)

    def wait_for_limit(self, predicate: Callable[[int], bool], timeout: float = 10.0) -> int:
        """Block until the limit in force satisfies ``predicate`` (bounded by ``timeout``)."""
        with self._changed:
            ok = self._changed.wait_for(
                lambda: self.limit is not None and predicate(self.limit), timeout
            )
        assert ok, f"limit stayed at {self.limit}"
        assert self.limit is not None
        return self.limit


def test_overload_when_lag_high_then_new_streams_503_and_admitted_ones_finish() -> None:
    settings = load_settings(
        {
            "CHAT_BACKEND": "fake",
            "CHAT_FAKE_TOKENS": "25",
            "CHAT_FAKE_DELAY_MS": "40",  # a 1 s run: still running while the others are refused
            "CHAT_ADAPTIVE_MIN_STREAMS": "2",
            "CHAT_LOG_LEVEL": "warning",
        }
    )
    lag = ScriptedLag()
    app = create_app(settings, lag_sampler=lag)
    with (
        ThreadedServer(app) as server,
        httpx.Client(base_url=server.base_url, timeout=20) as client,
    ):
        lag.wait_for_limit(lambda limit: limit > 2)  # open while the loop keeps up
        with (
            client.stream("POST", "/chat", json={"message": "one"}) as first,
            client.stream("POST", "/chat", json={"message": "two"}) as second,
        ):
            first_lines, second_lines = first.iter_lines(), second.iter_lines()
            assert next(first_lines) == next(second_lines) == "event: delta"

            lag.lag_s = 0.5  # the loop is far behind: shed
            assert lag.wait_for_limit(lambda limit: limit <= 2) == 2  # the floor
            refused = [client.post("/chat", json={"message": f"r{i}"}) for i in range(5)]
            refused.append(client.post("/chat/streams", json={"message": "resumable"}))
            for response in refused:
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "overloaded"
                assert response.headers["retry-after"] == "1"
                assert response.json()["error"]["request_id"] == response.headers["x-request-id"]

            # The admitted streams were never touched: each ends with exactly one `done`.
            for lines in (first_lines, second_lines):
                rest = events_only(list(parse_lines(lines)))
                assert [e.event for e in rest].count("done") == 1
                assert rest[-1].event == "done"
                assert all(e.event == "delta" for e in rest[:-1])

        lag.lag_s = 0.0  # caught up: admitted again
        lag.wait_for_limit(lambda limit: limit > 2)
        again = client.post(
            "/chat", json={"message": "again"}, headers={"Accept": "application/json"}
        )
        assert again.status_code == 200
        assert again.json()["finish_reason"] == "stop"


def test_overload_when_bad_auth_or_media_type_then_those_errors_win() -> None:
    settings = load_settings(
        {
            "CHAT_BACKEND": "fake",
            "CHAT_FAKE_TOKENS": "40",
            "CHAT_FAKE_DELAY_MS": "50",
            "CHAT_ADAPTIVE_MIN_STREAMS": "1",
            "CHAT_API_KEYS": "k1",
            "CHAT_MAX_BODY_BYTES": "1024",
            "CHAT_LOG_LEVEL": "warning",
        }
    )
    lag = ScriptedLag()
    auth = {"Authorization": "Bearer k1"}
    app = create_app(settings, lag_sampler=lag)
    with (
        ThreadedServer(app) as server,
        httpx.Client(base_url=server.base_url, timeout=20) as client,
    ):
        lag.lag_s = 0.5
        lag.wait_for_limit(lambda limit: limit == 1)
        with client.stream("POST", "/chat", json={"message": "one"}, headers=auth) as held:
            assert next(held.iter_lines()) == "event: delta"
            assert client.post("/chat", json={"message": "x"}).status_code == 401
            wrong_type = client.post("/chat", content=b"{}", headers=auth)
            assert wrong_type.status_code == 415
            big = client.post(
                "/chat",
                content=b"{" + b" " * 2000 + b"}",
                headers={**auth, "Content-Type": "application/json"},
            )
            assert big.status_code == 413
            shed = client.post("/chat", json={"message": "x"}, headers=auth)
            assert shed.status_code == 503
            assert shed.json()["error"]["code"] == "overloaded"
