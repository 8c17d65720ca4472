"""Helpers for conversation tests: turns in JSON mode, history reads, the upstream's view."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.fake_upstream import FakeUpstream, RequestRecord, expected_text
from chat.conversations.ownership import ANONYMOUS
from chat.conversations.sqlite_store import SQLiteConversationStore
from chat.conversations.store import Limits
from chat.conversations.turns import turn_items
from tests.support.service import Service

ANSWER = expected_text(8)  # the shared fake upstream answers 8 tokens


def openai_env(
    upstream: FakeUpstream, api: str = "chat_completions", **extra: str
) -> dict[str, str]:
    return {
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-test-" + "c" * 24,
        "CHAT_OPENAI_API": api,
        "CHAT_MODEL": "fake-model",
        **extra,
    }


def new_id() -> str:
    return "c-" + uuid.uuid4().hex


def ask(
    service: Service,
    message: str,
    conversation_id: str | None,
    *,
    key: str | None = None,
    request_id: str | None = None,
) -> httpx.Response:
    """One turn in JSON mode."""
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    headers = {"Accept": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return httpx.post(service.base_url + "/chat", json=body, headers=headers, timeout=20)


def history(
    service: Service, conversation_id: str, *, key: str | None = None
) -> list[dict[str, str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(
        service.base_url + f"/conversations/{conversation_id}", headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversation_id"] == conversation_id
    assert set(body) == {"conversation_id", "turns", "request_id"}
    return list(body["turns"])


def sent_messages(record: RequestRecord) -> list[tuple[str, str]]:
    """(role, text) of every message the service sent, instructions left out, both formats."""
    body = record.body
    items = body.get("messages") if "messages" in body else body.get("input")
    assert isinstance(items, list), body
    sent: list[tuple[str, str]] = []
    for item in items:
        role = item.get("role")
        if role in ("system", "developer"):
            continue
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        sent.append((str(role), str(content)))
    return sent


def upstream_request(upstream: FakeUpstream, marker: str) -> RequestRecord:
    """The request whose newest user message carries ``marker``."""
    return upstream.wait_for_request(
        lambda r: bool(sent_messages(r)) and marker in sent_messages(r)[-1][1], timeout=5
    )


def asked_upstream(upstream: FakeUpstream, marker: str) -> bool:
    return any(marker in str(r.body) for r in upstream.requests)


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    """Poll ``condition`` (state in another process) until true; fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit_s}s waiting for {what}")


def populate(
    data_dir: Path,
    conversation_id: str,
    turns: int,
    *,
    text: Callable[[str, int], str] | None = None,
) -> None:
    """Write ``turns`` turns into the file the service will open, as the service does.

    Turn ``i`` is ``u{i}`` / ``a{i}``, or ``text("u", i)`` / ``text("a", i)``.
    """
    text = text or (lambda role, i: f"{role}{i}")

    async def write() -> None:
        store = await SQLiteConversationStore.open(data_dir, Limits())
        try:
            claim = await store.claim(conversation_id, ANONYMOUS, 0)
            session = await store.open_session(conversation_id)
            items = [item for i in range(turns) for item in turn_items(text("u", i), text("a", i))]
            await session.add_items(items)
            await store.close_session(session)
            await store.finish(
                conversation_id, claim.token, owner=ANONYMOUS, turns=turns, add_bytes=0
            )
        finally:
            await store.aclose()

    asyncio.run(write())
