"""Readiness: /readyz and POST /chat say 503 not_ready until the backend has loaded."""

from __future__ import annotations

import asyncio
import threading

import httpx

from app import create_app
from chat.models.backend import Backend
from chat.models.fake import FakeModel
from chat.settings import Settings, load_settings
from tests.support.inprocess import ThreadedServer


def test_backend_loading_when_requested_then_503_until_loaded() -> None:
    release = threading.Event()

    async def slow_load() -> None:
        # The model "loads" until the test lets it finish.
        await asyncio.to_thread(release.wait, 10)

    def factory(settings: Settings) -> Backend:
        from agents import ModelSettings

        return Backend(
            name="gated", model=FakeModel(tokens=2), model_settings=ModelSettings(), load=slow_load
        )

    app = create_app(load_settings({"CHAT_BACKEND": "fake"}), backend_factory=factory)
    with ThreadedServer(app) as server, httpx.Client(base_url=server.base_url) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"
        chat = client.post("/chat", json={"message": "hi"})
        assert chat.status_code == 503
        assert chat.json()["error"]["code"] == "not_ready"
        assert chat.headers["retry-after"].isdigit()
        release.set()
        for _ in range(100):  # bounded: the load finishes within a few event-loop turns
            if client.get("/readyz").status_code == 200:
                break
            release.wait(0.02)
        assert client.get("/readyz").status_code == 200
        answer = client.post(
            "/chat", json={"message": "hi"}, headers={"Accept": "application/json"}
        )
        assert answer.status_code == 200
